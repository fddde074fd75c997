//! Fuzz target: netfront's RX path against a backend whose responses (ids, offsets, statuses,
//! flags, extra-info slots, `rsp_prod`) and grant mappings are driven by the input.
//!
//! Invariants checked per input: no panic; the device ends Connected or Failed with a typed
//! protocol/ring error; grants the backend keeps mapped are never revoked; after disconnect and
//! the backend letting go, grant references and event channels are back at baseline and the
//! simulator saw no grant rewritten while mapped.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "common/netfront.rs"]
mod harness;
use harness::*;
use xen_sim::netback::RxFrame;

fuzz_target!(|data: &[u8]| {
    run_input(data, |env, nb, nf, round| {
        for k in 0..3usize {
            let len = [60, 1514, 5000, 9000][(round + k) % 4];
            let gso_mss = (k == 2 && round % 2 == 1).then_some(1448);
            nb.inject(RxFrame {
                data: frame(len, round as u8),
                queue: k as u16,
                data_validated: k == 0,
                csum_blank: k == 1,
                gso_mss,
            });
        }
        env.sim.run_until_idle();
        let _ = nf.poll();
        while let Ok(Some((d, m))) = nf.receive() {
            Stats::bump(&env.stats.frames);
            assert!(!d.is_empty() && d.len() <= xen_netfront::MAX_RX_FRAME);
            assert!(usize::from(m.slots) <= xen_netfront::MAX_RX_SLOTS);
        }
    });
});
