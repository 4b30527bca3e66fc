//! Schedules and delayed jobs with the older service's semantics: its "Creating Delayed Jobs"
//! and "Creating Cron Jobs" examples on an injected clock, catch-up and overlap policies, one
//! fire per fire time even with two services on one store, and (in real time) an every-second
//! schedule across a server restart.

use std::sync::Arc;
use std::time::Duration;

use remotask::domain::{
    CatchUp, JobFilter, JobState, JobTemplate, ManualClock, Overlap, ScheduleName, SpecDef,
    Timestamp,
};
use remotask::service::{ScheduleRequest, Service};

use crate::support::Engine;

/// 2026-01-01T00:00:00Z.
const T0: Timestamp = Timestamp(1_767_225_600_000);

fn at(seconds: i64) -> Timestamp {
    Timestamp(T0.0 + seconds * 1000)
}

fn template(task: &str, args: &[&str]) -> JobTemplate {
    JobTemplate {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..JobTemplate::of(task.parse().unwrap(), b"{\"foo\": \"bar\"}".to_vec())
    }
}

fn request(spec: SpecDef, job: JobTemplate) -> ScheduleRequest {
    ScheduleRequest {
        spec,
        job,
        overlap: Overlap::Allow,
        catch_up: CatchUp::One,
        paused: false,
    }
}

fn minutes(m: &[u32]) -> SpecDef {
    SpecDef {
        minute: Some(m.to_vec()),
        ..SpecDef::default()
    }
}

fn cron(expr: &str) -> SpecDef {
    SpecDef {
        cron: Some(expr.into()),
        ..SpecDef::default()
    }
}

/// The seed's `service.process(t)`: the clock is at `t`, due schedules fire, and the job a
/// fire submitted has run. Returns the schedule's fire count (the seed's counter result).
async fn process(e: &Engine, clock: &ManualClock, name: &ScheduleName, t: i64) -> u64 {
    clock.set(at(t));
    e.service.fire_due().await.unwrap();
    e.service.wake();
    let view = e.service.schedule(name).await.unwrap();
    if let Some(id) = view.schedule.last_job {
        let job = e.service.wait(id, Duration::from_secs(20)).await.unwrap();
        assert_eq!(job.state, JobState::Completed, "{job:?}");
    }
    e.service.schedule(name).await.unwrap().schedule.fires
}

async fn keys(service: &Service) -> Vec<String> {
    let mut keys: Vec<String> = service
        .jobs(&JobFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|j| j.unique_key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_creating_cron_jobs_runs_at_10_and_13_past_and_reschedules_in_place() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut e = Engine::with_clock(clock.clone()).await;
    e.start_workers(1);
    let name: ScheduleName = "counter".parse().unwrap();
    e.service
        .create_schedule(&name, request(minutes(&[10, 13]), template("echo", &[])))
        .await
        .unwrap();

    // Too early: nothing ran, no result yet.
    assert_eq!(process(&e, &clock, &name, 0).await, 0);
    assert!(e.service.schedule(&name).await.unwrap().last_job.is_none());
    // Ten minutes later it ran once, and the schedule shows that run's result.
    assert_eq!(process(&e, &clock, &name, 10 * 60).await, 1);
    let view = e.service.schedule(&name).await.unwrap();
    let last = view.last_job.unwrap();
    assert_eq!(last.output.as_deref(), Some(&b"{\"foo\": \"bar\"}"[..]));
    assert_eq!(view.schedule.next_fire, Some(at(13 * 60)));
    // One minute later it is not called; three minutes later it is.
    assert_eq!(process(&e, &clock, &name, 11 * 60).await, 1);
    assert_eq!(process(&e, &clock, &name, 13 * 60).await, 2);

    // Rescheduled in place to minutes 11 and 13: the old minute 10 no longer fires.
    e.service
        .update_schedule(&name, request(minutes(&[11, 13]), template("echo", &[])))
        .await
        .unwrap();
    assert_eq!(process(&e, &clock, &name, 10 * 60 + 60 * 60).await, 2);
    assert_eq!(process(&e, &clock, &name, 11 * 60 + 60 * 60).await, 3);
    assert_eq!(
        keys(&e.service).await,
        [
            "schedule:counter:2026-01-01T00:10:00.000Z",
            "schedule:counter:2026-01-01T00:13:00.000Z",
            "schedule:counter:2026-01-01T01:11:00.000Z",
        ]
    );
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_creating_delayed_jobs_runs_at_10_not_at_0_or_9() {
    let clock = Arc::new(ManualClock::new(T0));
    let mut e = Engine::with_clock(clock.clone()).await;
    e.start_workers(1);
    let mut r = Engine::request("echo", &[]);
    r.delay = Some(Duration::from_secs(10));
    let job = e.submit(r).await;
    assert_eq!(job.state, JobState::Scheduled);
    for t in [0, 9] {
        clock.set(at(t));
        e.service.wake();
        // Give the workers time to (wrongly) take it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            e.service.job(job.id).await.unwrap().state,
            JobState::Scheduled,
            "at {t} s"
        );
    }
    clock.set(at(10));
    e.service.wake();
    let done = e
        .service
        .wait(job.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Completed);

    // A delay schedule fires once, and never again.
    let name: ScheduleName = "once".parse().unwrap();
    let spec = SpecDef {
        delay_seconds: Some(10.0),
        ..SpecDef::default()
    };
    e.service
        .create_schedule(&name, request(spec, template("echo", &[])))
        .await
        .unwrap();
    assert_eq!(process(&e, &clock, &name, 19).await, 0);
    assert_eq!(process(&e, &clock, &name, 20).await, 1);
    assert_eq!(process(&e, &clock, &name, 3600).await, 1);
    let view = e.service.schedule(&name).await.unwrap();
    assert_eq!(view.schedule.next_fire, None);
    e.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_after_downtime_runs_none_one_or_all_missed_fires() {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::with_clock(clock.clone()).await;
    for (policy, want) in [
        (CatchUp::All, vec![1, 2, 3, 4, 5]),
        (CatchUp::One, vec![5]),
        (CatchUp::None, vec![5]),
    ] {
        clock.set(T0);
        let name: ScheduleName = format!("every-minute-{policy:?}")
            .to_lowercase()
            .parse()
            .unwrap();
        let mut r = request(cron("* * * * *"), template("echo", &[]));
        r.catch_up = policy;
        e.service.create_schedule(&name, r).await.unwrap();
        // Down from 00:00 to 00:05:30; 00:05 is 30 s late, still on time.
        clock.set(at(5 * 60 + 30));
        e.service.fire_due().await.unwrap();
        let s = e.service.schedule(&name).await.unwrap().schedule;
        let prefix = format!("schedule:{name}:");
        let fired: Vec<u32> = keys(&e.service)
            .await
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|t| t[14..16].parse().unwrap())
            .collect();
        assert_eq!(fired, want, "{policy:?}");
        assert_eq!(s.fires + s.skipped, 5, "{policy:?}");
        assert_eq!(s.next_fire, Some(at(6 * 60)));
        e.service.delete_schedule(&name).await.unwrap();
    }
    // With `none`, a fire missed by more than a minute does not run at all.
    clock.set(T0);
    let name: ScheduleName = "hourly".parse().unwrap();
    let mut r = request(cron("0 * * * *"), template("echo", &[]));
    r.catch_up = CatchUp::None;
    e.service.create_schedule(&name, r).await.unwrap();
    clock.set(at(2 * 3600 + 5 * 60));
    assert_eq!(e.service.fire_due().await.unwrap(), 0);
    let s = e.service.schedule(&name).await.unwrap().schedule;
    assert_eq!(
        (s.fires, s.skipped, s.next_fire),
        (0, 2, Some(at(3 * 3600)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_waits_for_the_previous_job_and_allow_does_not() {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::with_clock(clock.clone()).await;
    for (overlap, want_jobs) in [(Overlap::Skip, 1), (Overlap::Allow, 3)] {
        clock.set(T0);
        let name: ScheduleName = format!("o-{overlap:?}").to_lowercase().parse().unwrap();
        let mut r = request(cron("* * * * *"), template("echo", &[]));
        r.overlap = overlap;
        e.service.create_schedule(&name, r).await.unwrap();
        // No workers: each fire's job stays queued, so it is live at the next fire.
        for minute in 1..=3 {
            clock.set(at(minute * 60));
            e.service.fire_due().await.unwrap();
        }
        let s = e.service.schedule(&name).await.unwrap().schedule;
        assert_eq!(
            (s.fires, s.skipped),
            (want_jobs, 3 - want_jobs),
            "{overlap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_on_one_store_fire_each_time_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::with_clock(clock.clone()).await;
    let other = Engine::open(e.dir.path(), clock.clone()).await;
    let name: ScheduleName = "shared".parse().unwrap();
    e.service
        .create_schedule(&name, request(cron("* * * * * *"), template("echo", &[])))
        .await
        .unwrap();
    let mut total = 0;
    for second in 1..=20 {
        clock.set(at(second));
        let (a, b) = tokio::join!(e.service.fire_due(), other.fire_due());
        total += a.unwrap() + b.unwrap();
    }
    assert_eq!(total, 20);
    let keys = keys(&e.service).await;
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!((keys.len(), unique.len()), (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_and_pause_resume_preview_delete_work() {
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::with_clock(clock.clone()).await;
    let name: ScheduleName = "nightly".parse().unwrap();
    let err = e
        .service
        .create_schedule(&name, request(cron("61 * * * *"), template("echo", &[])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cron \"61 * * * *\""), "{err}");
    let err = e
        .service
        .create_schedule(&name, request(cron("0 3 * * *"), template("nope", &[])))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"nope\" is not registered"),
        "{err}"
    );

    let mut berlin = cron("0 3 * * *");
    berlin.tz = Some("Europe/Berlin".into());
    e.service
        .create_schedule(&name, request(berlin.clone(), template("echo", &[])))
        .await
        .unwrap();
    let err = e
        .service
        .create_schedule(&name, request(berlin, template("echo", &[])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    // 03:00 in Berlin is 02:00 UTC in winter.
    let next = e.service.preview_schedule(&name, 3).await.unwrap();
    assert_eq!(next, [at(2 * 3600), at(26 * 3600), at(50 * 3600)]);

    e.service.set_schedule_paused(&name, true).await.unwrap();
    clock.set(at(3 * 3600));
    assert_eq!(e.service.fire_due().await.unwrap(), 0);
    // Resumed, it goes on from now: the 02:00 fire missed while paused does not run.
    let r = e.service.set_schedule_paused(&name, false).await.unwrap();
    assert_eq!(r.next_fire, Some(at(26 * 3600)));
    assert_eq!(e.service.fire_due().await.unwrap(), 0);
    e.service.delete_schedule(&name).await.unwrap();
    assert!(e.service.schedule(&name).await.is_err());
}
