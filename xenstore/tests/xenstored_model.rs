//! The sim's xenstored against a reference model (a map of paths), with random operations, both
//! through direct calls and through the client over the ring.

mod common;

use proptest::prelude::*;
use std::collections::BTreeMap;
use xen_sim::xenstored::Xenstored;
use xen_store::{Errno, Store, TxId, XsError};

#[derive(Debug, Clone)]
enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    Read(String),
    Dir(String),
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("c-d"), Just("e_f")],
        1..4,
    )
    .prop_map(|parts| format!("/t/{}", parts.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(p, v)| Op::Write(p, v)),
        path().prop_map(Op::Mkdir),
        path().prop_map(Op::Rm),
        path().prop_map(Op::Read),
        path().prop_map(Op::Dir),
    ]
}

/// The reference: every existing node under `/t` (and `/t` itself) with its value.
#[derive(Default)]
struct Model(BTreeMap<String, Vec<u8>>);

fn parent(p: &str) -> &str {
    &p[..p.rfind('/').unwrap_or(0)]
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        m.0.insert("/t".into(), vec![]);
        m
    }
    fn create_parents(&mut self, p: &str) {
        let mut q = parent(p);
        while q.len() > 2 && !self.0.contains_key(q) {
            self.0.insert(q.to_string(), vec![]);
            q = parent(q);
        }
    }
    fn apply(&mut self, op: &Op) -> Result<Vec<u8>, Errno> {
        match op {
            Op::Write(p, v) => {
                self.create_parents(p);
                self.0.insert(p.clone(), v.clone());
                Ok(vec![])
            }
            Op::Mkdir(p) => {
                self.create_parents(p);
                self.0.entry(p.clone()).or_default();
                Ok(vec![])
            }
            Op::Rm(p) => {
                if !self.0.contains_key(p) {
                    return if self.0.contains_key(parent(p)) {
                        Ok(vec![])
                    } else {
                        Err(Errno::ENOENT)
                    };
                }
                let prefix = format!("{p}/");
                self.0.retain(|k, _| k != p && !k.starts_with(&prefix));
                Ok(vec![])
            }
            Op::Read(p) => self.0.get(p).cloned().ok_or(Errno::ENOENT),
            Op::Dir(p) => {
                if !self.0.contains_key(p) {
                    return Err(Errno::ENOENT);
                }
                let prefix = format!("{p}/");
                let names: Vec<&str> = self
                    .0
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .filter(|rest| !rest.contains('/'))
                    .collect();
                Ok(names.join(",").into_bytes())
            }
        }
    }
}

fn direct(x: &mut Xenstored, op: &Op) -> Result<Vec<u8>, Errno> {
    match op {
        Op::Write(p, v) => x.write(0, 0, p, v).map(|()| vec![]),
        Op::Mkdir(p) => x.mkdir(0, 0, p).map(|()| vec![]),
        Op::Rm(p) => x.rm(0, 0, p).map(|()| vec![]),
        Op::Read(p) => x.read(0, 0, p),
        Op::Dir(p) => x.directory(0, 0, p).map(|v| v.join(",").into_bytes()),
    }
}

fn via_client<S: Store>(s: &S, tx: TxId, op: &Op) -> Result<Vec<u8>, Errno> {
    let r = match op {
        Op::Write(p, v) => s.write(tx, p, v).map(|()| vec![]),
        Op::Mkdir(p) => s.mkdir(tx, p).map(|()| vec![]),
        Op::Rm(p) => s.rm(tx, p).map(|()| vec![]),
        Op::Read(p) => s.read(tx, p),
        Op::Dir(p) => s.directory(tx, p).map(|v| v.join(",").into_bytes()),
    };
    r.map_err(|e| match e {
        XsError::Errno(e) => e,
        other => panic!("unexpected {other:?}"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn xenstored_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut x = Xenstored::new();
        x.mkdir(0, 0, "/t").unwrap();
        let mut m = Model::new();
        for op in &ops {
            prop_assert_eq!(direct(&mut x, op), m.apply(op), "{:?}", op);
        }
    }

    #[test]
    fn client_over_the_ring_matches_the_model(ops in proptest::collection::vec(op(), 1..40), in_tx in any::<bool>()) {
        let w = common::World::new(1, 0);
        w.dom0(|x| x.mkdir(0, 0, "/t")).unwrap();
        w.dom0(|x| x.set_perms(0, 0, "/t", &[xen_store::Perm { domid: 1, kind: xen_store::PermKind::None }])).unwrap();
        let xs = w.client();
        let mut m = Model::new();
        // A transaction sees its own writes; nothing else runs, so the commit succeeds.
        let tx = if in_tx { xs.transaction_start().unwrap() } else { TxId::NONE };
        for op in &ops {
            prop_assert_eq!(via_client(&xs, tx, op), m.apply(op), "{:?}", op);
        }
        if in_tx {
            xs.transaction_end(tx, true).unwrap();
        }
        // The committed store equals the model.
        for (p, v) in &m.0 {
            prop_assert_eq!(&xs.read(TxId::NONE, p).unwrap(), v);
        }
        let mut x = w.xsd.lock().unwrap();
        for op in &ops {
            if let Op::Read(p) = op {
                prop_assert_eq!(x.read(0, 0, p).ok(), m.0.get(p).cloned());
            }
        }
    }
}
