//! A small bounded result cache so that a redelivered task (its ack was lost with the
//! connection, or its callback window ran out and it was requeued) is answered without
//! running the model again.
//!
//! Bounded two ways: at most `capacity` entries (the oldest insertion is evicted first -
//! FIFO is enough here, since an entry is only ever hit by the one redelivery of its task)
//! and each entry expires after `ttl`. A hit also requires the same image and parameters,
//! so a reused task id with different input is computed afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Completed callback bodies by task id.
#[derive(Debug)]
pub(crate) struct ResultCache {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    order: VecDeque<(String, Instant)>,
}

#[derive(Debug)]
struct Entry {
    image_key: String,
    body: Value,
    at: Instant,
    /// The backend answered 2xx to this body: a redelivery only lost its ack.
    delivered: bool,
}

/// A cached result for a redelivered task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cached {
    /// The `completed` callback body.
    pub(crate) body: Value,
    /// Whether the backend already accepted it.
    pub(crate) delivered: bool,
}

/// What must be equal for a hit besides the task id.
pub(crate) fn image_key(
    image_id: &str,
    image_path: &str,
    parameters: &Map<String, Value>,
) -> String {
    format!(
        "{image_id}\u{0}{image_path}\u{0}{}",
        Value::Object(parameters.clone())
    )
}

impl ResultCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters for a cache: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, task_id: &str, image_key: &str) -> Option<Cached> {
        let inner = self.lock();
        let e = inner.entries.get(task_id)?;
        (e.image_key == image_key && e.at.elapsed() < self.ttl).then(|| Cached {
            body: e.body.clone(),
            delivered: e.delivered,
        })
    }

    /// Records that the backend accepted the cached body of `task_id`.
    pub(crate) fn mark_delivered(&self, task_id: &str) {
        if let Some(e) = self.lock().entries.get_mut(task_id) {
            e.delivered = true;
        }
    }

    pub(crate) fn put(&self, task_id: &str, image_key: String, body: Value) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        let at = Instant::now();
        inner.entries.insert(
            task_id.to_owned(),
            Entry {
                image_key,
                body,
                at,
                delivered: false,
            },
        );
        inner.order.push_back((task_id.to_owned(), at));
        // The order queue may hold stale pairs for re-inserted ids; only the pair whose
        // instant matches the live entry evicts it.
        while inner.entries.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some((id, at)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&id).is_some_and(|e| e.at == at) {
                inner.entries.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hit_needs_same_image_and_parameters() {
        let c = ResultCache::new(4, Duration::from_secs(60));
        let k = image_key("img", "/p/a.png", &Map::new());
        c.put("t1", k.clone(), json!({"status": "completed"}));
        assert_eq!(
            c.get("t1", &k).map(|e| e.body),
            Some(json!({"status": "completed"}))
        );
        assert_eq!(c.get("t2", &k).map(|e| e.body), None);
        assert_eq!(
            c.get("t1", &image_key("img", "/p/b.png", &Map::new()))
                .map(|e| e.body),
            None
        );
    }

    #[test]
    fn evicts_oldest_beyond_capacity_and_expires() {
        let c = ResultCache::new(2, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            c.put(id, String::new(), json!(id));
        }
        assert_eq!(c.get("a", "").map(|e| e.body), None);
        assert_eq!(c.get("b", "").map(|e| e.body), Some(json!("b")));
        assert_eq!(c.get("c", "").map(|e| e.body), Some(json!("c")));
        // Re-inserting many times must not grow without bound nor evict the live entry.
        for _ in 0..10 {
            c.put("c", String::new(), json!("c"));
        }
        assert_eq!(c.get("c", "").map(|e| e.body), Some(json!("c")));
        assert!(c.lock().order.len() <= 4);
        assert_eq!(c.get("c", "").map(|e| e.delivered), Some(false));
        c.mark_delivered("c");
        assert_eq!(c.get("c", "").map(|e| e.delivered), Some(true));
        let short = ResultCache::new(2, Duration::ZERO);
        short.put("a", String::new(), json!(1));
        assert_eq!(short.get("a", "").map(|e| e.body), None);
    }
}
