//! What the host gives a guest at run time besides its job: randomness and the clocks. An
//! attempt either records them or replays a recording ([`Recording`]):
//! - randomness: `random_get` reads a ChaCha20 generator seeded per attempt (32 bytes from
//!   the thread's generator, itself seeded from the OS); the seed is kept, so every random
//!   byte follows from it. Preview1 reaches no other generator (the insecure ones are
//!   preview2 only).
//! - clocks: every value the wall and monotonic clocks return is kept in order, up to
//!   [`MAX_CLOCK_READS`]; past that the attempt says it is not replayable, and why. A replay
//!   hands out the recorded values in the same order (the last one again if the replay reads
//!   more). Sleeps (`poll_oneoff` with clock subscriptions) read the clocks through the same
//!   two clocks, so what a guest observes of time is recorded; the time it actually waits
//!   is real, in a replay too (it waits the same durations, which fuel does not count).
//! - resolutions are fixed at 1 ns, so they need no recording.
//!
//! Not covered: timestamps of files the guest makes in its scratch directory, and the
//! order a directory lists its entries in, which come from the host's file system.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use rand::SeedableRng as _;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use crate::domain::{MAX_CLOCK_READS, Recording, Seed};

/// One attempt's randomness and clocks, recording or replaying; shared by its two clocks.
#[derive(Clone)]
pub(super) struct HostInputs {
    seed: Seed,
    tape: Arc<Mutex<Tape>>,
}

struct Tape {
    /// What the clocks gave so far (in a replay, the recorded values handed out again).
    kept: Recording,
    /// In a replay, the recording the clocks read from.
    script: Option<Recording>,
    wall_reads: usize,
    monotonic_reads: usize,
    started: Instant,
}

impl HostInputs {
    /// Records a fresh attempt (`replay` is `None`) or replays `replay`; the monotonic clock
    /// counts from `started`.
    pub(super) fn new(replay: Option<Recording>, started: Instant) -> Self {
        let seed = match &replay {
            Some(r) => r.seed,
            None => {
                let mut seed = [0u8; 32];
                rand::rng().fill_bytes(&mut seed);
                Seed(seed)
            }
        };
        let tape = Tape {
            kept: Recording::new(seed),
            script: replay,
            wall_reads: 0,
            monotonic_reads: 0,
            started,
        };
        HostInputs {
            seed,
            tape: Arc::new(Mutex::new(tape)),
        }
    }

    /// Gives the guest this attempt's generator and clocks.
    pub(super) fn install(&self, wasi: &mut WasiCtxBuilder) {
        wasi.secure_random(chacha20::ChaCha20Rng::from_seed(self.seed.0))
            .wall_clock(WallClock(self.clone()))
            .monotonic_clock(MonotonicClock(self.clone()));
    }

    /// What the attempt was given.
    pub(super) fn recording(&self) -> Recording {
        let mut tape = self.tape();
        std::mem::replace(&mut tape.kept, Recording::new(self.seed))
    }

    fn tape(&self) -> MutexGuard<'_, Tape> {
        self.tape.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tape {
    /// The next value of a clock: the recorded one in a replay, else `real()`; kept.
    fn next(&mut self, wall: bool, real: impl FnOnce(&Tape) -> u64) -> u64 {
        let at = if wall {
            self.wall_reads += 1;
            self.wall_reads - 1
        } else {
            self.monotonic_reads += 1;
            self.monotonic_reads - 1
        };
        let value = match &self.script {
            Some(script) => {
                let values = if wall {
                    &script.wall
                } else {
                    &script.monotonic
                };
                values.get(at).or(values.last()).copied().unwrap_or(0)
            }
            None => real(self),
        };
        if self.kept.clock_reads() < MAX_CLOCK_READS {
            if wall {
                self.kept.wall.push(value);
            } else {
                self.kept.monotonic.push(value);
            }
        } else if self.kept.not_replayable.is_none() {
            self.kept.not_replayable = Some(format!(
                "the guest read the clocks more than {MAX_CLOCK_READS} times, the most an \
                 attempt's recording keeps"
            ));
        }
        value
    }
}

struct WallClock(HostInputs);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let nanos = self.0.tape().next(true, |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        Duration::from_nanos(nanos)
    }
}

struct MonotonicClock(HostInputs);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.tape().next(false, |tape| {
            u64::try_from(tape.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_hands_out_the_recorded_values_then_the_last_again() {
        let recorder = HostInputs::new(None, Instant::now());
        let wall = WallClock(recorder.clone());
        let mono = MonotonicClock(recorder.clone());
        let (w1, m1, w2) = (wall.now(), mono.now(), wall.now());
        let recording = recorder.recording();
        assert_eq!(recording.wall.len(), 2);
        assert_eq!(recording.monotonic, vec![m1]);
        assert_eq!(recording.not_replayable, None);

        let replayer = HostInputs::new(Some(recording.clone()), Instant::now());
        let wall = WallClock(replayer.clone());
        let mono = MonotonicClock(replayer.clone());
        assert_eq!((wall.now(), mono.now(), wall.now()), (w1, m1, w2));
        assert_eq!(wall.now(), w2);
        let again = replayer.recording();
        assert_eq!(again.seed, recording.seed);
        assert_eq!(
            again.wall,
            vec![recording.wall[0], recording.wall[1], recording.wall[1]]
        );
    }

    #[test]
    fn past_the_limit_a_recording_says_it_is_not_replayable() {
        let recorder = HostInputs::new(None, Instant::now());
        let mono = MonotonicClock(recorder.clone());
        for _ in 0..MAX_CLOCK_READS {
            mono.now();
        }
        assert_eq!(recorder.tape().kept.not_replayable, None);
        mono.now();
        let recording = recorder.recording();
        assert_eq!(recording.monotonic.len(), MAX_CLOCK_READS);
        let why = recording.not_replayable.expect("marked");
        assert!(why.contains("more than 4096 times"), "{why}");
    }
}
