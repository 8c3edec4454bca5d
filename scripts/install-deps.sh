#!/usr/bin/env bash
# Installs the Debian packages kiln needs to build and test, if any are
# missing. Safe to run again: it asks apt only when something is absent.
set -euo pipefail

packages=(
  build-essential cmake pkg-config   # the build
  libjansson-dev                     # JSON: safetensors headers, --json output
  libutf8proc-dev                    # Unicode categories and case: the tokenizer
  libpng-dev                         # PNG in and out
  libssl-dev                         # SHA-256 for the model hash in PNG parameters
  libmicrohttpd-dev                  # kiln serve: the HTTP server
  python3                            # test helpers (standard library only)
)

# The browser test of kiln serve's page: Debian's chromium, driven by
# playwright-core from npm (tests/browser); no browser is ever downloaded.
# Node and npm: the machine's own where it has them (a nodesource nodejs
# carries its npm, and Debian's npm package would conflict with it).
packages+=(chromium)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

# The fuzzers (scripts/fuzz.sh): clang with libFuzzer and the sanitizer
# runtimes, Debian's clang 14.
packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "kiln: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
