//! The catalog and schedules: task versions and defaults, tokens by hash, console sessions,
//! a schedule fire applied once.

use super::*;

pub(super) async fn task_versions_and_defaults(store: impl Store) {
    let name: TaskName = "resize".parse().unwrap();
    let (v1, v2) = (ModuleDigest::of(b"v1"), ModuleDigest::of(b"v2"));
    let defaults = TaskDefaults {
        env: vec![("MODE".into(), "fast".into())],
        ..TaskDefaults::default()
    };
    store
        .put_task(&name, v1, 10, Some(defaults.clone()), T0)
        .await
        .unwrap();
    let t = store
        .put_task(&name, v2, 20, None, Timestamp(T0.0 + 1))
        .await
        .unwrap();
    assert_eq!(t.digest, v2, "the name points at the newest version");
    assert_eq!(
        t.defaults, defaults,
        "a new version without defaults keeps them"
    );
    let versions: Vec<_> = t
        .versions
        .iter()
        .map(|v| (v.digest, v.size_bytes))
        .collect();
    assert_eq!(versions, vec![(v2, 20), (v1, 10)], "newest first");

    let changed = TaskDefaults {
        queue: Some("slow".parse().unwrap()),
        ..TaskDefaults::default()
    };
    let t = store
        .set_task_defaults(&name, changed.clone(), Timestamp(T0.0 + 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((t.defaults, t.digest), (changed, v2));
    assert_eq!(
        store
            .set_task_defaults(&"nope".parse().unwrap(), TaskDefaults::default(), T0)
            .await
            .unwrap(),
        None
    );
    assert!(store.delete_task(&name).await.unwrap());
    assert!(store.get_task(&name).await.unwrap().is_none());
    assert!(!store.delete_task(&name).await.unwrap());
}

pub(super) async fn tokens_are_found_by_hash_until_revoked(store: impl Store) {
    let token = TokenRecord {
        id: "tok_1".into(),
        name: "ci".into(),
        role: Role::Submit,
        hash: "h1".into(),
        created_at: T0,
        revoked_at: None,
    };
    store.create_token(&token).await.unwrap();
    assert_eq!(
        store.token_by_hash("h1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.token_by_hash("h2").await.unwrap(), None);
    assert_eq!(
        store
            .revoke_token("tok_1", Timestamp(T0.0 + 5))
            .await
            .unwrap(),
        Revoked::Revoked
    );
    assert_eq!(
        store
            .revoke_token("tok_1", Timestamp(T0.0 + 6))
            .await
            .unwrap(),
        Revoked::NotFound
    );
    assert_eq!(
        store.revoke_token("tok_unknown", T0).await.unwrap(),
        Revoked::NotFound
    );
    assert_eq!(store.token_by_hash("h1").await.unwrap(), None);
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(Timestamp(T0.0 + 5)));
}

pub(super) async fn the_last_live_admin_token_is_never_revoked(store: impl Store) {
    let admin = |id: &str| TokenRecord {
        id: id.into(),
        name: id.into(),
        role: Role::Admin,
        hash: format!("hash {id}"),
        created_at: T0,
        revoked_at: None,
    };
    store.create_token(&admin("a")).await.unwrap();
    assert_eq!(
        store.revoke_token("a", T0).await.unwrap(),
        Revoked::LastAdmin
    );
    store.create_token(&admin("b")).await.unwrap();
    assert_eq!(store.revoke_token("a", T0).await.unwrap(), Revoked::Revoked);
    assert_eq!(
        store.revoke_token("b", T0).await.unwrap(),
        Revoked::LastAdmin
    );
    // Two revocations at once of the only two live admin tokens: one of them is refused.
    store.create_token(&admin("c")).await.unwrap();
    let (b, c) = tokio::join!(store.revoke_token("b", T0), store.revoke_token("c", T0));
    let mut outcomes = [b.unwrap(), c.unwrap()];
    outcomes.sort_by_key(|o| *o == Revoked::LastAdmin);
    assert_eq!(outcomes, [Revoked::Revoked, Revoked::LastAdmin]);
    let live: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    assert_eq!(live.len(), 1);
}

pub(super) async fn a_schedule_fire_is_applied_once(store: impl Store) {
    let name: ScheduleName = "tick".parse().unwrap();
    let record = ScheduleRecord {
        name: name.clone(),
        spec: SpecDef {
            cron: Some("* * * * *".into()),
            ..SpecDef::default()
        },
        job: JobTemplate::of("echo".parse().unwrap(), vec![]),
        overlap: Overlap::Allow,
        catch_up: CatchUp::One,
        paused: false,
        next_fire: Some(Timestamp(T0.0 + 60_000)),
        last_fire: None,
        last_job: None,
        fires: 0,
        skipped: 0,
        last_error: None,
        created_at: T0,
        updated_at: T0,
    };
    store.put_schedule(&record).await.unwrap();
    assert_eq!(
        store.get_schedule(&name).await.unwrap(),
        Some(record.clone())
    );
    assert!(store.due_schedules(T0).await.unwrap().is_empty());
    assert_eq!(
        store
            .due_schedules(Timestamp(T0.0 + 60_000))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.next_schedule_fire().await.unwrap(),
        Some(Timestamp(T0.0 + 60_000))
    );

    let mut job = new_job("q", 0, T0);
    job.unique_key = Some("schedule:tick:t1".into());
    let firing = Firing {
        expected: Timestamp(T0.0 + 60_000),
        next: Some(Timestamp(T0.0 + 120_000)),
        fired_at: Some(Timestamp(T0.0 + 60_000)),
        jobs: vec![job.clone()],
        skipped: 2,
        error: None,
    };
    let now = Timestamp(T0.0 + 61_000);
    let first = store
        .fire_schedule(&name, firing.clone(), now)
        .await
        .unwrap();
    assert_eq!(first, Some(vec![Inserted::New(job.id)]));
    // The same fire again (another node that read the same next_fire) changes nothing.
    let mut again = firing.clone();
    again.jobs[0].id = JobId::generate();
    assert_eq!(store.fire_schedule(&name, again, now).await.unwrap(), None);
    let r = store.get_schedule(&name).await.unwrap().unwrap();
    assert_eq!(
        (r.next_fire, r.last_fire, r.last_job, r.fires, r.skipped),
        (
            Some(Timestamp(T0.0 + 120_000)),
            Some(Timestamp(T0.0 + 60_000)),
            Some(job.id),
            1,
            2
        )
    );
    // Paused schedules are not due; deleted ones are gone, their jobs stay. An update made
    // from the record as read before the fire keeps the fire's history.
    store
        .put_schedule(&ScheduleRecord {
            paused: true,
            ..record
        })
        .await
        .unwrap();
    let paused = store.get_schedule(&name).await.unwrap().unwrap();
    assert_eq!(
        (paused.paused, paused.last_job, paused.fires, paused.skipped),
        (true, Some(job.id), 1, 2)
    );
    assert!(
        store
            .due_schedules(Timestamp(T0.0 + 999_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_schedule_fire().await.unwrap(), None);
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    assert!(store.delete_schedule(&name).await.unwrap());
    assert!(!store.delete_schedule(&name).await.unwrap());
    assert!(store.get_job(job.id).await.unwrap().is_some());
}

pub(super) async fn sessions_last_until_they_expire_end_or_lose_their_token(store: impl Store) {
    let token = TokenRecord {
        id: "tok_s".into(),
        name: "console".into(),
        role: Role::Read,
        hash: "token hash".into(),
        created_at: T0,
        revoked_at: None,
    };
    store.create_token(&token).await.unwrap();
    let session = |hash: &str, expires: i64| SessionRecord {
        hash: hash.into(),
        token_hash: "token hash".into(),
        expires_at: Timestamp(T0.0 + expires),
    };
    store.start_session(&session("s1", 100), T0).await.unwrap();
    store.start_session(&session("s2", 10), T0).await.unwrap();
    assert_eq!(
        store.session("s1", T0).await.unwrap(),
        Some(session("s1", 100))
    );
    assert_eq!(store.session("nope", T0).await.unwrap(), None);
    // Expired: not found, and forgotten when the next session starts.
    let later = Timestamp(T0.0 + 10);
    assert_eq!(store.session("s2", later).await.unwrap(), None);
    store
        .start_session(&session("s3", 200), later)
        .await
        .unwrap();
    assert!(!store.end_session("s2").await.unwrap());
    // Ended: gone.
    assert!(store.end_session("s3").await.unwrap());
    assert_eq!(store.session("s3", later).await.unwrap(), None);
    // Revoking the token ends its sessions.
    assert!(store.session("s1", later).await.unwrap().is_some());
    assert_eq!(
        store.revoke_token("tok_s", later).await.unwrap(),
        Revoked::Revoked
    );
    assert_eq!(store.session("s1", later).await.unwrap(), None);
}
