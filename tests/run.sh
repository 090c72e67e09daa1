#!/usr/bin/env bash
# Runs hermit's unit tests (cmocka binaries) and integration tests (bash scripts that
# start real pods, agents and programs), then prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD="${BUILD:-build}"
export HERMIT_ROOT="$PWD"
mode="${1:-all}"
pattern="${2:-}"
passed=0
failed=0
failed_names=()

run_unit() {
	local t out p f
	for t in "$BUILD"/tests/test_*; do
		[ -x "$t" ] || continue
		[ -n "$pattern" ] && [[ "$t" != *"$pattern"* ]] && continue
		echo "== unit: $(basename "$t")"
		out=$(CMOCKA_MESSAGE_OUTPUT=stdout timeout 300 "$t" 2>&1)
		local rc=$?
		echo "$out" | grep -E '^\[ +(RUN|OK|FAILED|PASSED|ERROR|SKIPPED) +\]|^\[  (ERROR|FAILED)' | grep -v '^\[ RUN' || true
		# cmocka 1.1 may print the summary without a leading newline
		p=$(echo "$out" | grep -o '\[  PASSED  \] [0-9]* test' | grep -o '[0-9]*' | tail -1)
		f=$(echo "$out" | grep -o '\[  FAILED  \] [0-9]* test' | grep -o '[0-9]*' | tail -1)
		p=${p:-0}
		f=${f:-0}
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
			f=1
		fi
		if [ "$f" -gt 0 ]; then
			echo "---- full output of $(basename "$t") (exit $rc) ----"
			echo "$out" | tail -60
			echo "----"
		fi
		passed=$((passed + p))
		failed=$((failed + f))
		[ "$f" -gt 0 ] && failed_names+=("unit/$(basename "$t")")
	done
}

run_integration() {
	local s results
	results=$(mktemp)
	for s in tests/integration/*.sh; do
		[ -f "$s" ] || continue
		[ -n "$pattern" ] && [[ "$s" != *"$pattern"* ]] && continue
		echo "== integration: $(basename "$s")"
		: >"$results"
		RESULTS="$results" timeout 1800 bash "$s"
		local rc=$?
		local p f
		p=$(grep -c '^PASS ' "$results")
		f=$(grep -c '^FAIL ' "$results")
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
			echo "FAIL $(basename "$s") exited $rc outside any test"
			f=1
		fi
		passed=$((passed + p))
		failed=$((failed + f))
		while read -r _ name; do failed_names+=("$(basename "$s"):$name"); done < <(grep '^FAIL ' "$results")
	done
	rm -f "$results"
}

case "$mode" in
--unit) run_unit ;;
--integration) run_integration ;;
*) run_unit; run_integration ;;
esac

echo
if [ ${#failed_names[@]} -gt 0 ]; then
	echo "failed:"
	printf '  %s\n' "${failed_names[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
