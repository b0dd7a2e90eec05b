# Sourced by .ci/run and .ci/reliability: the tools they need, pinned, checked up front, and
# step timing.
#
# Pins (change them here, together with the docs that quote them):
#   NIGHTLY_DATE      the nightly toolchain's commit date (fuzzing, ASan, TSan). The toolchain
#                     named `nightly` is used when it is this one; otherwise
#                     `nightly-$NIGHTLY_DATE` (installed when CI=true).
#   CARGO_FUZZ_VERSION cargo-fuzz, from crates.io.
NIGHTLY_DATE=2026-05-19
CARGO_FUZZ_VERSION=0.13.2

# ---- step timing ---------------------------------------------------------------------------------

STEP_NAMES=()
STEP_SECS=()
STEP_NAME=""
STEP_START=0

_step_close() {
    if [ -n "$STEP_NAME" ]; then
        STEP_NAMES+=("$STEP_NAME")
        STEP_SECS+=($((SECONDS - STEP_START)))
        STEP_NAME=""
    fi
}

# step NAME: starts a timed step (the previous one ends).
step() {
    _step_close
    STEP_NAME="$*"
    STEP_START=$SECONDS
    printf '\n==> %s\n' "$*"
}

# Prints how long each step took (on exit, also after a failure: the last step is the one that
# failed).
step_summary() {
    local status=$?
    _step_close
    if [ "${#STEP_NAMES[@]}" -gt 0 ]; then
        printf '\n==> step timings\n'
        local i
        for i in "${!STEP_NAMES[@]}"; do
            printf '%6ss  %s\n' "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}"
        done
        printf '%6ss  total%s\n' "$SECONDS" "$([ "$status" = 0 ] || echo " (FAILED, exit $status)")"
    fi
}

# ---- tools ---------------------------------------------------------------------------------------

ci() { [ "${CI:-}" = true ]; }

# The nightly toolchain to use (`+$NIGHTLY`), set by need_nightly.
NIGHTLY=""

# Finds (CI: installs) the pinned nightly toolchain with rust-src; sets NIGHTLY.
need_nightly() {
    [ -n "$NIGHTLY" ] && return 0
    local name
    for name in nightly "nightly-$NIGHTLY_DATE"; do
        if rustup run "$name" rustc --version 2>/dev/null | grep -q "$NIGHTLY_DATE)"; then
            NIGHTLY=$name
            break
        fi
    done
    if [ -z "$NIGHTLY" ]; then
        if ! ci; then
            echo "needs the nightly toolchain of $NIGHTLY_DATE: rustup toolchain install nightly-$NIGHTLY_DATE --component rust-src" >&2
            echo "(found: $(rustup run nightly rustc --version 2>/dev/null || echo none))" >&2
            exit 2
        fi
        rustup toolchain install "nightly-$NIGHTLY_DATE" --profile minimal --component rust-src
        NIGHTLY="nightly-$NIGHTLY_DATE"
    fi
    # rust-src: -Zbuild-std (TSan). A machine that reaches only the package registries may not
    # be able to download a rustup component: then this fails, here, before anything ran.
    if ! rustup component list --toolchain "$NIGHTLY" --installed | grep -q '^rust-src'; then
        if ! ci; then
            echo "needs rust-src: rustup component add rust-src --toolchain $NIGHTLY" >&2
            exit 2
        fi
        rustup component add rust-src --toolchain "$NIGHTLY" || {
            echo "rust-src for $NIGHTLY cannot be installed here: ThreadSanitizer cannot run, and CI does not skip it" >&2
            exit 1
        }
    fi
}

# Finds (CI: installs) cargo-fuzz $CARGO_FUZZ_VERSION.
need_cargo_fuzz() {
    if cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
        return 0
    fi
    if ! ci; then
        echo "needs cargo-fuzz $CARGO_FUZZ_VERSION: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked" >&2
        echo "(found: $(cargo fuzz --version 2>/dev/null || echo none))" >&2
        exit 2
    fi
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
}

# libclang for bindgen (the bindings drift check); installed with apt when CI=true.
need_libclang() {
    if ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so'; then
        return 0
    fi
    if ! ci; then
        echo "needs libclang (bindgen): apt-get install libclang-dev" >&2
        exit 2
    fi
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
}

# rustfmt and clippy for the stable toolchain.
need_components() {
    local c
    for c in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            if ! ci; then
                echo "needs $c: rustup component add $c" >&2
                exit 2
            fi
            rustup component add "$c"
        fi
    done
}
