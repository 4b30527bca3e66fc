//! The scheduler: fires due schedules, then sleeps until the next fire time (at most a second,
//! so a schedule created through another server process on the same store is seen), or until
//! a schedule changes in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::service::Service;

/// The longest the scheduler sleeps between looks at the store.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(super) async fn scheduler(service: Service, stopping: Arc<AtomicBool>) {
    while !stopping.load(Ordering::SeqCst) {
        let changed = service.shared.schedules.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Err(e) = service.fire_due().await {
            eprintln!("remotask: firing schedules failed: {e}");
        }
        let sleep = match service.store().next_schedule_fire().await {
            Ok(Some(next)) => {
                let ms = (next.0 - service.now().0).clamp(0, MAX_SLEEP.as_millis() as i64);
                Duration::from_millis(ms as u64)
            }
            _ => MAX_SLEEP,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut changed => {}
        }
    }
}
