#!/usr/bin/env bash
# The whole test suite, fastest first: lint, the unit tests of every package (the Go agent's included),
# then the integration tests on real VMs (`*.vm.test.ts`). Each tier runs one file at a time: VMs under
# TCG on 2 cores do not want to share, and the unit tier is over in a few minutes anyway.
# `npm test` builds from an empty dist first (bootstrap.sh --clean), so a deleted test cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test: lint" >&2
npx biome check . >&2
mapfile -t unit < <(find packages/*/dist -name '*.test.js' ! -name '*.vm.test.js' | sort)
mapfile -t vm < <(find packages/*/dist -name '*.vm.test.js' | sort)
echo "test: Go unit tests (guest agent, VMM jailer)" >&2
(cd packages/agent && go test ./...) >&2
(cd packages/hostd/jailer && go vet ./... && go test ./...) >&2
echo "test: ${#unit[@]} unit test files" >&2
node --test --test-concurrency=1 "${unit[@]}"
echo "test: ${#vm[@]} VM test files" >&2
node --test --test-concurrency=1 "${vm[@]}"
