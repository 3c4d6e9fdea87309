#!/usr/bin/env bash
# The whole test suite: lint, unit tests, then integration tests on real VMs.
# Integration tests run one file at a time: VMs under TCG on 2 cores do not want to share.
set -euo pipefail
cd "$(dirname "$0")/.."
npx biome check . >&2
mapfile -t files < <(find packages/*/dist -name '*.test.js' | sort)
exec node --test --test-concurrency=1 "${files[@]}"
