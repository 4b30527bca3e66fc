//! The two compiled forms of every module, one per [`Metering`]: with fuel checks compiled in,
//! and without. Fuel metering is an engine setting, so each form has an engine of its own,
//! with its linker, epoch ticker and artifact cache directory (named for the engine's
//! compatibility hash, so the forms never mix). The fuel form is built with the sandbox; the
//! CPU form the first time an attempt asks for it. A module is compiled in each form at most
//! once per process, when an attempt first needs it.

use std::sync::{Arc, OnceLock};

use wasmtime::{Engine, InstancePre, Linker};

use super::attempt::{self, AttemptState};
use super::cache::ArtifactCache;
use super::{CacheStatus, Compiled, Sandbox, SandboxConfig, SandboxError, admission, engine};
use crate::domain::Metering;

/// An engine and what goes with it.
pub(super) struct EngineForm {
    pub(super) engine: Engine,
    pub(super) linker: Linker<AttemptState>,
    pub(super) disk: Option<ArtifactCache>,
}

impl EngineForm {
    fn build(config: &SandboxConfig, metering: Metering) -> Result<Self, SandboxError> {
        let engine = engine::build(config, metering == Metering::Fuel)?;
        engine::start_ticker(&engine, config.epoch_tick)?;
        let linker = attempt::linker(&engine)?;
        let disk = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(&engine, dir)?),
            None => None,
        };
        Ok(Self {
            engine,
            linker,
            disk,
        })
    }
}

/// The engines of both forms.
pub(super) struct Engines {
    fuel: EngineForm,
    cpu: OnceLock<Result<EngineForm, String>>,
}

impl Engines {
    pub(super) fn new(config: &SandboxConfig) -> Result<Self, SandboxError> {
        Ok(Self {
            fuel: EngineForm::build(config, Metering::Fuel)?,
            cpu: OnceLock::new(),
        })
    }

    /// The engine of `metering`'s form, built on first use; why it could not be built.
    pub(super) fn get(
        &self,
        config: &SandboxConfig,
        metering: Metering,
    ) -> Result<&EngineForm, String> {
        match metering {
            Metering::Fuel => Ok(&self.fuel),
            Metering::Cpu => self
                .cpu
                .get_or_init(|| EngineForm::build(config, Metering::Cpu).map_err(|e| e.to_string()))
                .as_ref()
                .map_err(Clone::clone),
        }
    }

    pub(super) fn fuel(&self) -> &EngineForm {
        &self.fuel
    }
}

/// A module compiled and linked in one form.
pub(super) struct Form {
    pub(super) pre: InstancePre<AttemptState>,
}

/// Both forms of one module; the fuel form is made at admission.
pub(super) struct Forms {
    fuel: OnceLock<Arc<Form>>,
    cpu: OnceLock<Arc<Form>>,
}

impl Forms {
    pub(super) fn with_fuel(form: Form) -> Self {
        let fuel = OnceLock::new();
        let _ = fuel.set(Arc::new(form));
        Self {
            fuel,
            cpu: OnceLock::new(),
        }
    }

    fn slot(&self, metering: Metering) -> &OnceLock<Arc<Form>> {
        match metering {
            Metering::Fuel => &self.fuel,
            Metering::Cpu => &self.cpu,
        }
    }
}

/// `compiled` in `metering`'s form and its engine, compiling (or loading from the artifact
/// cache) on first use; `None` for the cache status when it was already made in this
/// process. An error is a host fault: the module was admitted in the other form.
pub(super) fn form<'s>(
    sandbox: &'s Sandbox,
    compiled: &Compiled,
    metering: Metering,
) -> Result<(&'s EngineForm, Arc<Form>, Option<CacheStatus>), String> {
    let engine = sandbox.inner.engines.get(sandbox.config(), metering)?;
    let slot = compiled.forms.slot(metering);
    if let Some(form) = slot.get() {
        return Ok((engine, form.clone(), None));
    }
    let (module, cache) =
        admission::compile_cached(sandbox, engine, compiled.digest, &compiled.bytes).map_err(
            |e| {
                format!(
                    "cannot compile the module for {} metering: {e}",
                    metering.as_str()
                )
            },
        )?;
    let pre = engine.linker.instantiate_pre(&module).map_err(|e| {
        format!(
            "cannot link the module for {} metering: {e:#}",
            metering.as_str()
        )
    })?;
    let _ = slot.set(Arc::new(Form { pre }));
    let form = slot.get().cloned().expect("the slot was just set");
    Ok((engine, form, Some(cache)))
}
