//! The storage layer against a real etcd: transactions with preconditions and claims, and the range
//! check that lets consistent lists be served from the watch cache.

use atoll_apiserver::storage::{Claims, Outcome, Store, Write, prefix_end};
use atoll_testkit::Etcd;

async fn store() -> (Etcd, Store) {
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("etcd");
    let store = Store::connect(std::slice::from_ref(&etcd.url))
        .await
        .expect("etcd client");
    (etcd, store)
}

fn done(o: Outcome) -> i64 {
    match o {
        Outcome::Done(rev) => rev,
        other => panic!("expected a write, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_are_transactions_with_preconditions_and_claims() {
    let (_etcd, s) = store().await;
    let none = Claims::default();
    let r1 = done(
        s.write(
            "/registry/x/a",
            Write::Create(bytes::Bytes::from_static(b"1")),
            &none,
        )
        .await
        .unwrap(),
    );
    assert!(
        matches!(s.write("/registry/x/a", Write::Create(bytes::Bytes::from_static(b"2")), &none).await.unwrap(), Outcome::Exists(kv) if kv.value == b"1")
    );
    let r2 = done(
        s.write(
            "/registry/x/a",
            Write::Update {
                value: bytes::Bytes::from_static(b"2"),
                revision: r1,
            },
            &none,
        )
        .await
        .unwrap(),
    );
    assert!(
        matches!(s.write("/registry/x/a", Write::Update { value: bytes::Bytes::from_static(b"3"), revision: r1 }, &none).await.unwrap(), Outcome::Changed(kv) if kv.revision == r2)
    );
    assert!(matches!(
        s.write("/registry/x/b", Write::Delete { revision: 5 }, &none)
            .await
            .unwrap(),
        Outcome::Missing
    ));

    // A claimed key that is taken fails the whole write: the object is not written either.
    let claim = Claims {
        claim: vec![("/registry/ranges/k".into(), "owner-1".into())],
        ..Claims::default()
    };
    done(
        s.write(
            "/registry/x/c",
            Write::Create(bytes::Bytes::from_static(b"c")),
            &claim,
        )
        .await
        .unwrap(),
    );
    let again = Claims {
        claim: vec![("/registry/ranges/k".into(), "owner-2".into())],
        ..Claims::default()
    };
    assert!(
        matches!(s.write("/registry/x/d", Write::Create(bytes::Bytes::from_static(b"d")), &again).await.unwrap(), Outcome::Taken(k, holder) if k == "/registry/ranges/k" && holder == "owner-1")
    );
    assert!(s.get("/registry/x/d").await.unwrap().is_none());
    // Releasing goes with the delete.
    let c = s.get("/registry/x/c").await.unwrap().unwrap();
    let release = Claims {
        release: vec!["/registry/ranges/k".into()],
        ..Claims::default()
    };
    done(
        s.write(
            "/registry/x/c",
            Write::Delete {
                revision: c.revision,
            },
            &release,
        )
        .await
        .unwrap(),
    );
    assert!(s.get("/registry/ranges/k").await.unwrap().is_none());

    // A guarded key that moved since it was read fails the write as a race; at its revision it passes.
    let ns = done(
        s.write(
            "/registry/namespaces/n",
            Write::Create(bytes::Bytes::from_static(b"n")),
            &none,
        )
        .await
        .unwrap(),
    );
    let stale = Claims {
        unchanged: vec![("/registry/namespaces/n".into(), ns - 1)],
        ..Claims::default()
    };
    let e = bytes::Bytes::from_static(b"e");
    assert!(matches!(
        s.write("/registry/x/e", Write::Create(e.clone()), &stale)
            .await
            .unwrap(),
        Outcome::Raced
    ));
    assert!(s.get("/registry/x/e").await.unwrap().is_none());
    let current = Claims {
        unchanged: vec![("/registry/namespaces/n".into(), ns)],
        ..Claims::default()
    };
    done(
        s.write("/registry/x/e", Write::Create(e), &current)
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn range_state_sees_every_kind_of_change() {
    let (_etcd, s) = store().await;
    let none = Claims::default();
    let (start, end) = ("/registry/y/", prefix_end("/registry/y/"));
    let empty = s.range_state(start.as_bytes(), &end, 0).await.unwrap();
    assert!(empty.unchanged && empty.count == 0);
    let r1 = done(
        s.write(
            "/registry/y/a",
            Write::Create(bytes::Bytes::from_static(b"a")),
            &none,
        )
        .await
        .unwrap(),
    );
    done(
        s.write(
            "/registry/z/other",
            Write::Create(bytes::Bytes::from_static(b"o")),
            &none,
        )
        .await
        .unwrap(),
    );
    let st = s.range_state(start.as_bytes(), &end, r1).await.unwrap();
    assert!(
        st.unchanged && st.count == 1,
        "writes elsewhere do not count: {st:?}"
    );
    assert!(st.revision > r1);
    let st = s.range_state(start.as_bytes(), &end, r1 - 1).await.unwrap();
    assert!(!st.unchanged, "a create after the revision shows");
    let r2 = done(
        s.write(
            "/registry/y/a",
            Write::Update {
                value: bytes::Bytes::from_static(b"a2"),
                revision: r1,
            },
            &none,
        )
        .await
        .unwrap(),
    );
    assert!(
        !s.range_state(start.as_bytes(), &end, r1)
            .await
            .unwrap()
            .unchanged,
        "an update shows"
    );
    let b = done(
        s.write(
            "/registry/y/b",
            Write::Create(bytes::Bytes::from_static(b"b")),
            &none,
        )
        .await
        .unwrap(),
    );
    let before_delete = s.range_state(start.as_bytes(), &end, b).await.unwrap();
    assert!(before_delete.unchanged && before_delete.count == 2);
    done(
        s.write("/registry/y/b", Write::Delete { revision: b }, &none)
            .await
            .unwrap(),
    );
    let after_delete = s.range_state(start.as_bytes(), &end, b).await.unwrap();
    assert!(
        after_delete.unchanged && after_delete.count == 1,
        "a delete shows as a lower count: {after_delete:?}"
    );
    let _ = r2;
}
