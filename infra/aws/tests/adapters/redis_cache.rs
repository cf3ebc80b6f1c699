//! The Redis result cache against a real redis-server: round trips, the
//! database chosen by `REDIS_DB_NAME`, and expiry.

use crate::common;

use std::time::Duration;

use sound_creator_aws::redis_cache::{final_key, stage_key, RedisCache};
use sound_creator_core::ports::{BackendError, ResultCache};
use sound_creator_core::task::{StageOutcome, TaskError, TaskStatus, Tenant};

fn cache(db: &str) -> RedisCache {
    RedisCache::connect(&common::settings_with(&[("REDIS_DB_NAME", db)])).expect("client")
}

async fn raw_connection(db: i64) -> redis::aio::MultiplexedConnection {
    let env = common::test_env();
    let url = format!(
        "redis://127.0.0.1:{}/{db}",
        env.get("REDIS_PORT").expect("REDIS_PORT")
    );
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn stages_and_final_results_round_trip_in_the_configured_database() {
    let cache = cache("3");
    cache.ping().await.expect("ping");
    let mut task = common::task(&Tenant::new("marketplace"), 2);
    let stage = StageOutcome::Failed {
        error: TaskError::new(
            sound_creator_core::error_code::ErrorCode::EngineError,
            "out of GPU memory",
        ),
    };

    assert_eq!(cache.get_stage(&task.id, 1).await.expect("get"), None);
    cache
        .put_stage(&task.id, 1, &stage, Duration::from_secs(60))
        .await
        .expect("put stage");
    assert_eq!(
        cache.get_stage(&task.id, 1).await.expect("get"),
        Some(stage)
    );
    assert_eq!(cache.get_stage(&task.id, 0).await.expect("get"), None);

    task.status = TaskStatus::Failed;
    cache
        .put_final(&task, Duration::from_secs(60))
        .await
        .expect("put final");
    assert_eq!(
        cache.get_final(&task.id).await.expect("get"),
        Some(task.clone())
    );
    let ttl = cache
        .ttl_of(&final_key(&task.id))
        .await
        .expect("ttl")
        .expect("has ttl");
    assert!((55..=60).contains(&ttl), "{ttl}");

    // The keys live in db 3, not db 0.
    let mut db3 = raw_connection(3).await;
    let mut db0 = raw_connection(0).await;
    let key = stage_key(&task.id, 1);
    let in3: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut db3)
        .await
        .expect("exists");
    let in0: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut db0)
        .await
        .expect("exists");
    assert!(in3 && !in0);
    assert!(
        key.starts_with("sound-creator:stage:") && key.ends_with(":1"),
        "{key}"
    );
}

#[tokio::test]
async fn an_entry_is_gone_after_its_ttl() {
    let cache = cache("0");
    let task = common::task(&Tenant::new("marketplace"), 1);
    cache
        .put_final(&task, Duration::from_secs(1))
        .await
        .expect("put");
    assert!(cache.get_final(&task.id).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache.get_final(&task.id).await.expect("get"), None);
}

#[tokio::test]
async fn an_entry_that_does_not_parse_is_reported_as_corrupt() {
    let cache = cache("0");
    let task = common::task(&Tenant::new("marketplace"), 1);
    let mut raw = raw_connection(0).await;
    let () = redis::cmd("SET")
        .arg(final_key(&task.id))
        .arg("{oops")
        .arg("EX")
        .arg(60)
        .query_async(&mut raw)
        .await
        .expect("set");
    assert!(matches!(
        cache.get_final(&task.id).await,
        Err(BackendError::Corrupt { .. })
    ));
}
