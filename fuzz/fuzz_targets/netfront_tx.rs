//! Fuzz target: netfront's TX path (completion reaping) against a backend whose TX responses
//! (ids, statuses, duplicates, `rsp_prod`) and grant mappings are driven by the input.
//!
//! Invariants checked per input: no panic; the device ends Connected or Failed with a typed
//! protocol/ring error; no TX buffer is reused while the backend could still read it (ids must be
//! in flight); grants the backend keeps mapped are never revoked; everything returns to baseline.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "common/netfront.rs"]
mod harness;
use harness::*;
use xen_netfront::TxMeta;

fuzz_target!(|data: &[u8]| {
    run_input(data, |env, nb, nf, round| {
        let nq = nf.num_queues().max(1);
        for k in 0..4usize {
            let len = [60, 1514, 5000, 9000][(round + k) % 4];
            let meta = TxMeta {
                csum_blank: k == 1 && nf.features().tx_csum_offload,
                data_validated: k == 0,
                gso_mss: (k == 3 && nf.features().gso_tcpv4).then_some(1448),
                // Batch the round's frames: publication then happens with the last one.
                more: k < 3,
            };
            match nf.transmit(k as u16 % nq, &frame(len, round as u8), meta) {
                Ok(()) => Stats::bump(&env.stats.frames),
                Err(NetError::Busy) | Err(NetError::BadFrameLength(_)) => {}
                Err(_) => assert_eq!(nf.state(), DeviceState::Failed),
            }
        }
        env.sim.run_until_idle();
        let _ = nf.poll();
        // The backend keeps what it received; drop it so memory stays flat across inputs.
        let _ = nb.take_tx();
    });
});
