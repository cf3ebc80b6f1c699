//! Each backend taken down for real (through `tests/env/stop-start.sh`):
//! the adapter answers `BackendError::Unavailable` within seconds, never
//! hangs or panics, and works again once the server is back, without being
//! rebuilt. These tests stop shared servers, so they live in their own test
//! binary (cargo runs test binaries one after another) and run one at a
//! time within it: `AwsBackends::connect` needs Postgres up.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use sound_creator_aws::{provision, AwsBackends};
use sound_creator_core::ports::{BackendError, PortResult, QueueName, StatsQuery};
use sound_creator_core::task::{ModelFamily, Tenant};

/// "Quickly": well under the API's request timeout.
const FAIL_FAST: Duration = Duration::from_secs(6);
const RECOVER_WITHIN: Duration = Duration::from_secs(15);

/// One outage at a time: the tests of this binary share the servers.
static ONE_OUTAGE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fails_fast<T: std::fmt::Debug>(what: &str, call: impl Future<Output = PortResult<T>>) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"));
    let elapsed = started.elapsed();
    match result {
        Err(BackendError::Unavailable { message, .. }) => {
            eprintln!("{what}: unavailable after {elapsed:?}: {message}");
            assert!(elapsed < FAIL_FAST, "{what} took {elapsed:?} to fail");
            assert!(!message.contains('\n'), "one-line message: {message}");
        }
        other => panic!("{what} with the backend down: expected Unavailable, got {other:?}"),
    }
}

async fn recovers<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = PortResult<T>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return value,
            Err(err) if started.elapsed() < RECOVER_WITHIN => {
                eprintln!("{what} not back yet: {err}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("{what} did not recover within {RECOVER_WITHIN:?}: {err}"),
        }
    }
}

async fn backends() -> (sound_creator_aws::AwsSettings, AwsBackends) {
    let settings = common::settings();
    provision(&settings).await.expect("provision");
    let backends = AwsBackends::connect(&settings).await.expect("connect");
    (settings, backends)
}

#[tokio::test]
async fn redis_down_is_unavailable_at_once_and_the_cache_recovers_by_itself() {
    let _outage = ONE_OUTAGE_AT_A_TIME.lock().await;
    let (_, b) = backends().await;
    let task = common::task(&Tenant::new("marketplace"), 1);
    b.cache
        .put_final(&task, Duration::from_secs(60))
        .await
        .expect("put while up");

    common::backend("redis", "stop");
    fails_fast("cache get", b.cache.get_final(&task.id)).await;
    fails_fast(
        "cache put",
        b.cache.put_final(&task, Duration::from_secs(60)),
    )
    .await;
    fails_fast("cache ping", b.cache.ping()).await;

    common::backend("redis", "start");
    recovers("cache ping", || b.cache.ping()).await;
    b.cache
        .put_final(&task, Duration::from_secs(60))
        .await
        .expect("put after restart");
    assert_eq!(
        b.cache
            .get_final(&task.id)
            .await
            .expect("get after restart"),
        Some(task)
    );
}

#[tokio::test]
async fn postgres_down_is_unavailable_at_once_and_stats_recover_by_themselves() {
    let _outage = ONE_OUTAGE_AT_A_TIME.lock().await;
    let (_, b) = backends().await;
    let tenant = Tenant::new(common::unique("tenant-"));
    let mut task = common::task(&tenant, 1);
    task.status = sound_creator_core::task::TaskStatus::Canceled;
    let row = sound_creator_core::ports::StatsRow::of(&task);
    b.stats.record(&row).await.expect("record while up");
    let query = StatsQuery {
        tenant,
        user_id: None,
        from: None,
        to: None,
        recent_limit: 5,
    };

    common::backend("postgres", "stop");
    fails_fast("stats record", b.stats.record(&row)).await;
    fails_fast("stats summary", b.stats.summarize(&query)).await;

    common::backend("postgres", "start");
    recovers("stats ping", || b.stats.ping()).await;
    b.stats.record(&row).await.expect("record after restart");
    assert_eq!(
        b.stats.summarize(&query).await.expect("summary").requests,
        1,
        "data survived the restart"
    );
}

#[tokio::test]
async fn the_aws_emulator_down_is_unavailable_at_once_and_the_clients_recover_by_themselves() {
    let _outage = ONE_OUTAGE_AT_A_TIME.lock().await;
    let (settings, b) = backends().await;
    let music = QueueName::Jobs(ModelFamily::Music);
    let task = common::task(&Tenant::new("marketplace"), 1);
    // Resolve the queue URL while up: the adapter keeps it across the outage.
    b.queue.depth(music).await.expect("depth while up");

    common::backend("moto", "stop");
    fails_fast("queue send", b.queue.send(music, "x", Duration::ZERO)).await;
    fails_fast(
        "queue receive",
        b.queue.receive(music, 1, Duration::from_secs(1)),
    )
    .await;
    fails_fast("queue depth", b.queue.depth(music)).await;
    fails_fast("task insert", b.tasks.insert(&task)).await;
    fails_fast("task get", b.tasks.get(&task.id)).await;
    fails_fast("blob put", b.blobs.put("k", vec![1], "audio/wav")).await;
    fails_fast("tasks ping", b.tasks.ping()).await;

    // moto keeps its state in memory: it comes back empty and is provisioned again.
    common::backend("moto", "start");
    provision(&settings).await.expect("provision after restart");
    recovers("queue depth", || b.queue.depth(music)).await;
    b.queue
        .send(music, "x", Duration::ZERO)
        .await
        .expect("send after restart");
    recovers("task insert", || b.tasks.insert(&task)).await;
    b.blobs
        .put("k", vec![1], "audio/wav")
        .await
        .expect("blob put after restart");
}

/// A hung server (accepts connections, never answers) is cut off by the
/// operation timeout instead of holding the caller.
#[tokio::test]
async fn a_hung_redis_or_aws_endpoint_times_out_instead_of_hanging() {
    let _outage = ONE_OUTAGE_AT_A_TIME.lock().await;
    let mut settings = common::settings();
    settings.operation_timeout = Duration::from_secs(2);
    provision(&settings).await.expect("provision");
    let b = AwsBackends::connect(&settings).await.expect("connect");
    let music = QueueName::Jobs(ModelFamily::Music);
    b.cache.ping().await.expect("redis up");
    b.queue.depth(music).await.expect("moto up");

    common::backend("redis", "pause");
    common::backend("moto", "pause");
    let cache = tokio::time::timeout(Duration::from_secs(20), b.cache.ping()).await;
    let queue = tokio::time::timeout(Duration::from_secs(20), b.queue.depth(music)).await;
    common::backend("redis", "resume");
    common::backend("moto", "resume");

    assert!(
        matches!(cache, Ok(Err(BackendError::Unavailable { .. }))),
        "cache: {cache:?}"
    );
    assert!(
        matches!(queue, Ok(Err(BackendError::Unavailable { .. }))),
        "queue: {queue:?}"
    );
    recovers("cache ping", || b.cache.ping()).await;
    recovers("queue depth", || b.queue.depth(music)).await;
}
