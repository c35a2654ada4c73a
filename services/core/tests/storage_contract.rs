//! The storage contract, run against both backends: local files and a real
//! S3 server (SeaweedFS, started by scripts/test.sh).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use deepcuts_core::storage::{LocalStore, ObjectStore, Store, StoreError};
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;

const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;

async fn round_trip(store: &dyn ObjectStore) {
    store
        .put("a/b/c.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(
        store.get("a/b/c.txt").await.unwrap(),
        Bytes::from_static(b"hello")
    );
    store
        .put("a/b/c.txt", Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        store.get("a/b/c.txt").await.unwrap(),
        Bytes::from_static(b"again"),
        "put overwrites"
    );
    assert!(store.exists("a/b/c.txt").await.unwrap());
    assert!(!store.exists("a/b/nothing.txt").await.unwrap());
    store.put("empty", Bytes::new()).await.unwrap();
    assert!(store.get("empty").await.unwrap().is_empty());
    store.delete("a/b/c.txt").await.unwrap();
    assert!(!store.exists("a/b/c.txt").await.unwrap());
    store
        .delete("a/b/c.txt")
        .await
        .expect("deleting a missing key is fine");
    assert!(matches!(
        store.put("../escape", Bytes::new()).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

async fn byte_ranges(store: &dyn ObjectStore) {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store
        .put("ranges/blob", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.get_range("ranges/blob", 10..20).await.unwrap(),
        Bytes::from(data[10..20].to_vec())
    );
    assert_eq!(
        store.get_range("ranges/blob", 9_990..20_000).await.unwrap(),
        Bytes::from(data[9_990..].to_vec()),
        "end past the object is cut"
    );
    assert!(store
        .get_range("ranges/blob", 5..5)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.get_range("ranges/blob", 10_001..10_005).await,
        Err(StoreError::InvalidRange { .. })
    ));
}

async fn listing_with_prefix(store: &dyn ObjectStore) {
    let keys: Vec<String> = (0..1_050)
        .map(|i| format!("many/part={i:05}.bin"))
        .collect();
    futures::stream::iter(keys.iter().cloned())
        .map(|key| async move { store.put(&key, Bytes::from(key.clone().into_bytes())).await })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    store
        .put("many-other/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store
        .put("other/many/y", Bytes::from_static(b"y"))
        .await
        .unwrap();
    let listed = store.list("many/").await.unwrap();
    assert_eq!(
        listed, keys,
        "every key, sorted, nothing outside the prefix"
    );
    let partial = store.list("many/part=001").await.unwrap();
    assert_eq!(partial.len(), 100, "a prefix may end mid-name");
    assert_eq!(store.list("many").await.unwrap().len(), 1_051);
    assert!(store.list("nothing-here/").await.unwrap().is_empty());
}

async fn missing_keys_are_typed(store: &dyn ObjectStore) {
    assert!(matches!(
        store.get("no/such/key").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_range("no/such/key", 0..3).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.get("no/such/key").await.unwrap_err().is_not_found());
}

async fn large_objects(store: &dyn ObjectStore) {
    let mut data = vec![0u8; 20 * 1024 * 1024];
    rand::rng().fill_bytes(&mut data);
    let data = Bytes::from(data);
    store.put("big/object.bin", data.clone()).await.unwrap();
    let back = store.get("big/object.bin").await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "20 MB object round-trips byte for byte");
    let middle = store
        .get_range("big/object.bin", 12_000_000..12_000_100)
        .await
        .unwrap();
    assert_eq!(middle, data.slice(12_000_000..12_000_100));
}

/// Readers racing a writer see one whole version or the other, never a mix.
async fn readers_never_see_half_an_object(store: Store) {
    let a = Bytes::from(vec![b'a'; 3 * 1024 * 1024]);
    let b = Bytes::from(vec![b'b'; 3 * 1024 * 1024]);
    store.put("atomic/obj", a.clone()).await.unwrap();
    let writer = {
        let store = store.clone();
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..8 {
                store
                    .put("atomic/obj", if i % 2 == 0 { b.clone() } else { a.clone() })
                    .await
                    .unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 4 {
        let got = store.get("atomic/obj").await.unwrap();
        assert!(
            got == a || got == b,
            "read a partial object of {} bytes",
            got.len()
        );
        reads += 1;
    }
    writer.await.unwrap();
}

async fn whole_contract(store: Store) {
    round_trip(store.as_ref()).await;
    byte_ranges(store.as_ref()).await;
    listing_with_prefix(store.as_ref()).await;
    missing_keys_are_typed(store.as_ref()).await;
    large_objects(store.as_ref()).await;
    readers_never_see_half_an_object(store.clone()).await;
    store.check().await.expect("store is ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_keep_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    whole_contract(store).await;
    // No temp file is left behind by the atomic writes.
    let leftovers = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".deepcuts-tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keeps_the_storage_contract() {
    let store = common::s3_store(MULTIPART_THRESHOLD).await;
    assert!(store.url().starts_with("s3://deepcuts-test/"));
    whole_contract(store).await;
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
