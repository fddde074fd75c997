#!/bin/sh
# RUSTC_WRAPPER for the fuzz build (`cargo xtask fuzz` sets it): compiles the simulator and its map
# crates without coverage instrumentation. They are the test bench, not the code under test: their
# edge counters and comparison hooks cost about a fifth of each execution and only added noise to
# the coverage feedback (a new path inside the simulator counted as new behaviour). LLVM takes the
# last `-sanitizer-coverage-level`, so appending level 0 undoes cargo-fuzz's level 4 for them.
# Everything else is compiled exactly as cargo-fuzz asks.
rustc="$1"
shift
case " $* " in
*" --crate-name xen_sim "* | *" --crate-name imbl "* | *" --crate-name imbl_sized_chunks "* | *" --crate-name archery "*)
    exec "$rustc" "$@" -Cllvm-args=-sanitizer-coverage-level=0
    ;;
esac
exec "$rustc" "$@"
