use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use sound_creator_core::ports::{StatsQuery, StatsRow, StatsStore};
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus, Tenant};

use crate::support::{open, quick_options};

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + ChronoDuration::minutes(minute)
}

fn row(
    tenant: &str,
    user: &str,
    minute: i64,
    status: TaskStatus,
    total_ms: Option<u64>,
) -> StatsRow {
    StatsRow {
        task_id: TaskId::generate(),
        tenant: Tenant::new(tenant),
        user_id: user.to_owned(),
        family: ModelFamily::Music,
        status,
        duration: 8.0,
        samples: 1,
        audio_seconds: if status == TaskStatus::Succeeded {
            8.0
        } else {
            0.0
        },
        created_at: at(minute),
        completed_at: total_ms.map(|ms| at(minute) + ChronoDuration::milliseconds(ms as i64)),
        queue_ms: total_ms.map(|_| 10),
        inference_ms: total_ms.map(|ms| ms.saturating_sub(10)),
        total_ms,
    }
}

fn query(tenant: &str) -> StatsQuery {
    StatsQuery {
        tenant: Tenant::new(tenant),
        user_id: None,
        from: None,
        to: None,
        recent_limit: 5,
    }
}

#[tokio::test]
async fn the_summary_counts_sums_and_takes_nearest_rank_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let stats = store.stats();
    // 20 finished tasks taking 100, 200, ..., 2000 ms; the list is shuffled
    // so the store has to sort.
    for i in [
        7u64, 3, 20, 1, 15, 9, 12, 18, 2, 5, 11, 19, 4, 8, 16, 6, 14, 10, 17, 13,
    ] {
        stats
            .record(&row(
                "marketplace",
                "user-1",
                i as i64,
                TaskStatus::Succeeded,
                Some(i * 100),
            ))
            .await
            .unwrap();
    }
    let mut audio = row(
        "marketplace",
        "user-2",
        30,
        TaskStatus::Failed,
        Some(50_000),
    );
    audio.family = ModelFamily::Audio;
    stats.record(&audio).await.unwrap();
    // Still running when recorded: no total_ms, so not in the percentiles.
    stats
        .record(&row(
            "marketplace",
            "user-2",
            31,
            TaskStatus::Canceled,
            None,
        ))
        .await
        .unwrap();

    let summary = stats.summarize(&query("marketplace")).await.unwrap();

    assert_eq!(summary.requests, 22);
    assert_eq!(summary.by_status.get("succeeded"), Some(&20));
    assert_eq!(summary.by_status.get("failed"), Some(&1));
    assert_eq!(summary.by_status.get("canceled"), Some(&1));
    assert_eq!(summary.by_type.get("music"), Some(&21));
    assert_eq!(summary.by_type.get("audio"), Some(&1));
    assert!((summary.audio_seconds - 160.0).abs() < 1e-9);
    // 21 timed rows: p50 is the 11th smallest, p95 the 20th.
    assert_eq!(summary.latency_ms.p50, Some(1100));
    assert_eq!(summary.latency_ms.p95, Some(2000));
    let recent: Vec<_> = summary.recent.iter().map(|r| r.created_at).collect();
    assert_eq!(
        recent,
        vec![at(31), at(30), at(20), at(19), at(18)],
        "newest first, limited"
    );
    assert_eq!(summary.recent[0].status, TaskStatus::Canceled);
    assert_eq!(summary.recent[1].family, ModelFamily::Audio);
}

#[tokio::test]
async fn the_summary_filters_by_user_and_inclusive_time_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let stats = store.stats();
    for minute in 0..10 {
        let user = if minute % 2 == 0 { "even" } else { "odd" };
        stats
            .record(&row(
                "marketplace",
                user,
                minute,
                TaskStatus::Succeeded,
                Some(1000 + minute as u64),
            ))
            .await
            .unwrap();
    }

    let by_user = stats
        .summarize(&StatsQuery {
            user_id: Some("odd".into()),
            ..query("marketplace")
        })
        .await
        .unwrap();
    assert_eq!(by_user.requests, 5);
    assert!(by_user
        .recent
        .iter()
        .all(|r| r.created_at.timestamp() / 60 % 2 == 1));

    let window = StatsQuery {
        from: Some(at(2)),
        to: Some(at(5)),
        ..query("marketplace")
    };
    let in_window = stats.summarize(&window).await.unwrap();
    assert_eq!(in_window.requests, 4, "both bounds are inclusive");
    assert_eq!(in_window.latency_ms.p50, Some(1003));
    assert_eq!(in_window.latency_ms.p95, Some(1005));

    let both = StatsQuery {
        user_id: Some("even".into()),
        from: Some(at(2)),
        to: Some(at(5)),
        ..query("marketplace")
    };
    assert_eq!(stats.summarize(&both).await.unwrap().requests, 2);
}

/// The API takes bounds from year 1 to 9999, wider than the table's unix
/// nanoseconds (1677 to 2262): such a bound selects exactly what it says
/// and is never a backend error (a `503` that would tell the client to
/// retry a request that can never change).
#[tokio::test]
async fn bounds_past_the_tables_time_range_select_exactly_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let stats = store.stats();
    for minute in 0..3 {
        stats
            .record(&row(
                "marketplace",
                "user-1",
                minute,
                TaskStatus::Succeeded,
                Some(100),
            ))
            .await
            .unwrap();
    }
    let year = |y: i32| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
    let end_of_9999 = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    let requests = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
        let stats = stats.clone();
        async move {
            stats
                .summarize(&StatsQuery {
                    from,
                    to,
                    ..query("marketplace")
                })
                .await
                .unwrap()
                .requests
        }
    };
    assert_eq!(requests(Some(year(1)), Some(end_of_9999)).await, 3);
    assert_eq!(requests(None, Some(end_of_9999)).await, 3);
    assert_eq!(requests(Some(year(1)), None).await, 3);
    assert_eq!(requests(Some(year(1)), Some(at(1))).await, 2);
    assert_eq!(requests(Some(at(1)), Some(end_of_9999)).await, 2);
    let after_every_row = stats
        .summarize(&StatsQuery {
            from: Some(year(5000)),
            to: Some(end_of_9999),
            ..query("marketplace")
        })
        .await
        .unwrap();
    assert_eq!(after_every_row.requests, 0);
    assert!(after_every_row.recent.is_empty());
    assert_eq!(after_every_row.latency_ms.p50, None);
    assert_eq!(requests(Some(year(1)), Some(year(1000))).await, 0);
}

#[tokio::test]
async fn one_tenant_never_sees_another_tenants_stats() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let stats = store.stats();
    stats
        .record(&row(
            "marketplace",
            "user-1",
            0,
            TaskStatus::Succeeded,
            Some(100),
        ))
        .await
        .unwrap();
    stats
        .record(&row("studio", "user-1", 1, TaskStatus::Failed, Some(900)))
        .await
        .unwrap();

    let summary = stats.summarize(&query("studio")).await.unwrap();
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.by_status.get("succeeded"), None);
    assert_eq!(summary.latency_ms.p50, Some(900));
    assert_eq!(summary.recent.len(), 1);

    let nobody = stats.summarize(&query("nobody")).await.unwrap();
    assert_eq!(nobody.requests, 0);
    assert_eq!(nobody.audio_seconds, 0.0);
    assert_eq!(nobody.latency_ms.p50, None);
    assert!(nobody.recent.is_empty());
}

#[tokio::test]
async fn recording_a_task_again_overwrites_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let stats = store.stats();
    let mut first = row("marketplace", "user-1", 0, TaskStatus::Failed, Some(100));
    stats.record(&first).await.unwrap();
    first.status = TaskStatus::Succeeded;
    first.total_ms = Some(300);
    stats.record(&first).await.unwrap();

    let summary = stats.summarize(&query("marketplace")).await.unwrap();
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.by_status.get("succeeded"), Some(&1));
    assert_eq!(summary.latency_ms.p95, Some(300));
    assert_eq!(summary.recent[0].task_id, first.task_id);
    assert_eq!(summary.recent[0].created_at, first.created_at);
}
