//! The Postgres stats store against a real PostgreSQL 15: idempotent
//! recording and the numbers `GET /v1/stats` answers with.

use crate::common;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use sound_creator_aws::postgres_stats::PostgresStats;
use sound_creator_core::ports::{StatsQuery, StatsRow, StatsStore};
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus, Tenant};

async fn stats() -> PostgresStats {
    PostgresStats::connect(&common::settings())
        .await
        .expect("connect and migrate")
}

fn row(
    tenant: &Tenant,
    user: &str,
    family: ModelFamily,
    status: TaskStatus,
    created_at: DateTime<Utc>,
    total_ms: Option<u64>,
) -> StatsRow {
    StatsRow {
        task_id: TaskId::generate(),
        tenant: tenant.clone(),
        user_id: user.into(),
        family,
        status,
        duration: 8.0,
        samples: 1,
        audio_seconds: if status == TaskStatus::Succeeded {
            8.0
        } else {
            0.0
        },
        created_at,
        completed_at: total_ms
            .map(|ms| created_at + ChronoDuration::milliseconds(i64::try_from(ms).unwrap_or(0))),
        queue_ms: Some(10),
        inference_ms: total_ms.map(|ms| ms / 2),
        total_ms,
    }
}

fn query(tenant: &Tenant) -> StatsQuery {
    StatsQuery {
        tenant: tenant.clone(),
        user_id: None,
        from: None,
        to: None,
        recent_limit: 3,
    }
}

#[tokio::test]
async fn recording_a_task_twice_keeps_one_row_with_the_latest_values() {
    let stats = stats().await;
    let tenant = Tenant::new(common::unique("tenant-"));
    let t0 = Utc::now();
    let mut first = row(
        &tenant,
        "u1",
        ModelFamily::Music,
        TaskStatus::Running,
        t0,
        None,
    );
    stats.record(&first).await.expect("record");
    first.status = TaskStatus::Succeeded;
    first.audio_seconds = 8.0;
    first.total_ms = Some(1234);
    stats.record(&first).await.expect("record again");

    let summary = stats.summarize(&query(&tenant)).await.expect("summary");
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.by_status.get("succeeded"), Some(&1));
    assert_eq!(summary.by_status.get("running"), None);
    assert_eq!(summary.latency_ms.p50, Some(1234));
}

#[tokio::test]
async fn the_summary_counts_sums_and_ranks_a_tenants_requests() {
    let stats = stats().await;
    let tenant = Tenant::new(common::unique("tenant-"));
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    // u1: ten finished music tasks with total_ms 100..=1000, one hour apart.
    let mut rows = Vec::new();
    for i in 0..10u32 {
        let status = if i == 9 {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        };
        rows.push(row(
            &tenant,
            "u1",
            ModelFamily::Music,
            status,
            base + ChronoDuration::hours(i.into()),
            Some(u64::from(i + 1) * 100),
        ));
    }
    // u2: one audio task still running (no total_ms), the newest of all.
    rows.push(row(
        &tenant,
        "u2",
        ModelFamily::Audio,
        TaskStatus::Running,
        base + ChronoDuration::hours(20),
        None,
    ));
    // Another tenant's row never shows up.
    let other = Tenant::new(common::unique("tenant-"));
    rows.push(row(
        &other,
        "u1",
        ModelFamily::Music,
        TaskStatus::Succeeded,
        base,
        Some(99_999),
    ));
    for r in &rows {
        stats.record(r).await.expect("record");
    }

    let all = stats.summarize(&query(&tenant)).await.expect("summary");
    assert_eq!(all.requests, 11);
    assert_eq!(all.by_status.get("succeeded"), Some(&9));
    assert_eq!(all.by_status.get("failed"), Some(&1));
    assert_eq!(all.by_status.get("running"), Some(&1));
    assert_eq!(all.by_type.get("music"), Some(&10));
    assert_eq!(all.by_type.get("audio"), Some(&1));
    assert!(
        (all.audio_seconds - 72.0).abs() < 1e-9,
        "{}",
        all.audio_seconds
    );
    // percentile_disc over 100..=1000 (the running task has no total_ms).
    assert_eq!(all.latency_ms.p50, Some(500));
    assert_eq!(all.latency_ms.p95, Some(1000));
    let recent: Vec<_> = all.recent.iter().map(|r| r.task_id.clone()).collect();
    assert_eq!(
        recent,
        vec![
            rows[10].task_id.clone(),
            rows[9].task_id.clone(),
            rows[8].task_id.clone()
        ],
        "newest first, limited"
    );
    assert_eq!(all.recent[0].family, ModelFamily::Audio);
    assert_eq!(all.recent[0].status, TaskStatus::Running);

    let u2 = stats
        .summarize(&StatsQuery {
            user_id: Some("u2".into()),
            ..query(&tenant)
        })
        .await
        .expect("summary");
    assert_eq!(u2.requests, 1);
    assert_eq!(u2.latency_ms.p50, None);

    // Inclusive bounds: hours 2..=4 of u1.
    let window = StatsQuery {
        user_id: Some("u1".into()),
        from: Some(base + ChronoDuration::hours(2)),
        to: Some(base + ChronoDuration::hours(4)),
        ..query(&tenant)
    };
    let windowed = stats.summarize(&window).await.expect("summary");
    assert_eq!(windowed.requests, 3);
    assert_eq!(windowed.latency_ms.p50, Some(400));

    // The widest bounds the API takes (years 1 and 9999) select exactly
    // what they say, never a backend error.
    let widest = StatsQuery {
        user_id: Some("u1".into()),
        from: Some(Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()),
        to: Some(Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()),
        ..query(&tenant)
    };
    let all_of_u1 = StatsQuery {
        user_id: Some("u1".into()),
        ..query(&tenant)
    };
    assert_eq!(
        stats.summarize(&widest).await.expect("summary").requests,
        stats.summarize(&all_of_u1).await.expect("summary").requests
    );
    let far_future = StatsQuery {
        from: Some(Utc.with_ymd_and_hms(5000, 1, 1, 0, 0, 0).unwrap()),
        ..widest
    };
    assert_eq!(
        stats
            .summarize(&far_future)
            .await
            .expect("summary")
            .requests,
        0
    );

    let empty = stats
        .summarize(&query(&Tenant::new(common::unique("nobody-"))))
        .await
        .expect("summary");
    assert_eq!(empty.requests, 0);
    assert!(empty.by_status.is_empty() && empty.recent.is_empty());
    assert_eq!(empty.latency_ms.p50, None);
}

#[tokio::test]
async fn connecting_again_runs_no_migration_twice() {
    stats().await;
    let again = stats().await;
    again.ping().await.expect("ping");
}
