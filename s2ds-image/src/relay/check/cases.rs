//! Scripts that cover each kind of record a peer may send, in the
//! positions that matter: the differential test runs them against rustls,
//! and they seed the fuzz corpora.

use super::super::record::alert;
use super::script::{Kind, Op};

fn op(kind: Kind) -> Op {
    Op { kind, corrupt: None }
}

fn data(len: usize) -> Op {
    op(Kind::Data { len, padding: 0 })
}

fn corrupt(kind: Kind, at: usize) -> Op {
    Op { kind, corrupt: Some((at, 0x41)) }
}

fn repeat(n: usize, o: Op) -> Vec<Op> {
    std::iter::repeat_n(o, n).collect()
}

/// The scripts.
pub fn all() -> Vec<Vec<Op>> {
    let close = || op(Kind::Alert { level: 1, description: alert::CLOSE_NOTIFY });
    let cancel = || op(Kind::Alert { level: 1, description: alert::USER_CANCELED });
    let hs = |b: &[u8]| op(Kind::Handshake(b.to_vec()));
    let mut cases = vec![
        vec![data(1000), data(16384), close()],
        vec![data(1000), data(0), data(5)],
        vec![data(10), close(), data(10)],
        vec![data(10), close(), op(Kind::Plain { typ: 22, len: 9 })],
        vec![op(Kind::Data { len: 100, padding: 200 }), close()],
        vec![data(16385)],
        vec![op(Kind::Data { len: 16384, padding: 100 }), close()],
        vec![
            data(7),
            op(Kind::KeyUpdate { request: 0 }),
            data(7),
            op(Kind::KeyUpdate { request: 1 }),
            data(7),
            close(),
        ],
        vec![op(Kind::KeyUpdate { request: 2 })],
        vec![op(Kind::KeyUpdate { request: 3 }), data(1)],
        vec![op(Kind::Ticket { len: 40 }), data(3), close()],
        vec![hs(&[])],
        vec![hs(&[24, 0, 0, 2, 0, 0])],
        vec![hs(&[24, 0, 0, 1, 0, 24])],
        vec![hs(&[24, 0, 0, 0])],
        vec![hs(&[1, 0, 0, 0])],
        vec![hs(&[2, 0, 0, 1, 0])],
        vec![hs(&[4, 0, 0, 1, 7])],
        vec![hs(&[24, 0]), data(3)],
        vec![hs(&[24, 0]), close()],
        vec![hs(&[24, 0]), hs(&[0, 1]), hs(&[1]), data(3), close()],
        vec![hs(&[24, 0, 0, 1, 1]), data(3), close()],
        vec![hs(&[4, 0xff, 0xff, 0xff])],
        vec![hs(&[4, 0, 0, 20]), hs(&[0; 20]), close()],
        vec![data(5), op(Kind::PaddingOnly { len: 0 })],
        vec![data(5), op(Kind::PaddingOnly { len: 30 })],
        vec![data(5), op(Kind::Oversized { extra: 0 })],
        vec![data(5), op(Kind::Oversized { extra: 500 })],
        vec![data(1), op(Kind::Short { len: 0 })],
        vec![data(1), op(Kind::Short { len: 16 })],
        vec![data(3), corrupt(Kind::Data { len: 50, padding: 0 }, 0)],
        vec![data(3), corrupt(Kind::Data { len: 50, padding: 0 }, 1)],
        vec![data(3), corrupt(Kind::Data { len: 50, padding: 0 }, 2)],
        vec![data(3), corrupt(Kind::Data { len: 50, padding: 0 }, 3)],
        vec![data(3), corrupt(Kind::Data { len: 50, padding: 0 }, 70)],
        vec![data(3), corrupt(Kind::KeyUpdate { request: 0 }, 9)],
        vec![data(3), corrupt(Kind::Alert { level: 1, description: 0 }, 6)],
        repeat(40, data(0)),
        [repeat(31, data(0)), vec![data(1)], repeat(31, data(0)), vec![close()]].concat(),
        repeat(6, cancel()),
        [repeat(4, cancel()), vec![data(2), close()]].concat(),
        repeat(40, op(Kind::KeyUpdate { request: 1 })),
        [
            repeat(30, op(Kind::KeyUpdate { request: 0 })),
            vec![data(1)],
            repeat(30, op(Kind::KeyUpdate { request: 1 })),
            vec![close()],
        ]
        .concat(),
        repeat(3, op(Kind::Ticket { len: 9 })),
    ];
    for typ in [20, 21, 22, 24, 0x80] {
        cases.push(vec![data(5), op(Kind::Plain { typ, len: 2 })]);
        cases.push(vec![data(5), op(Kind::Plain { typ, len: 0 })]);
    }
    for inner in [20, 24, 25, 99, 255] {
        cases.push(vec![data(5), op(Kind::Other { inner, len: 3 })]);
    }
    for at in 1..5 {
        cases.push(vec![op(Kind::SplitKeyUpdate { at }), data(9), close()]);
    }
    cases
}
