#!/usr/bin/env bash
# `make test`: every tier, in two streams at once. One stream alone leaves the 2 cores idle a
# third of the time (services starting, nodes coming back, polls): this stream runs the unit and
# serve tiers, `stt serve`'s lifecycle and the app tier's diarization module (its speaker
# embeddings: ~60 s), the other the rest of the app tier, `serve run`'s lifecycle and the cluster
# tier (about as long, measured: 450 s and 549 s with the diarization module in the second
# stream, one box, one run). The streams share no service:
# each stream's pytest has its own databases, S3 server, ports and temporary files, and the
# cluster tier's Ray lives in a folder of its own that nothing else joins.
#
# The first stream's output shows as it runs; the second's is kept and shown when both have
# ended. The exit status is the first failure's; a stream that collects no test is a failure,
# unless arguments given to select tests (-k, a path) leave one stream nothing to run.
#
# usage: scripts/test-tiers.sh PYTHON [pytest arguments...]
set -uo pipefail
python=$1
shift
here=$(mktemp -d -t stt-tests-XXXXXX)
cleanup() {
    local started=$SECONDS size
    size=$(du -sh "$here" 2>/dev/null | cut -f1)
    rm -rf "$here"
    echo "removed the tests' temporary files ($size) in $((SECONDS - started)) s"
}
trap cleanup EXIT

moved=tests/app/test_diarization.py
"$python" -m pytest tests/app --ignore="$moved" tests/lifecycle/test_serve_run.py tests/cluster --basetemp="$here/second" "$@" > "$here/second.log" 2>&1 &
second=$!
"$python" -m pytest tests/unit "$moved" tests/serve tests/lifecycle/test_stop.py --basetemp="$here/first" "$@"
first_rc=$?
first_s=$SECONDS  # whole processes, start-up and exit included (pytest's own figure leaves them out)
wait "$second"
second_rc=$?
second_s=$SECONDS

echo
echo "================ the second stream: tests/app (but $moved), tests/lifecycle/test_serve_run.py, tests/cluster ================"
cat "$here/second.log"
echo "================ first stream: exit $first_rc; second stream: exit $second_rc ================"
echo "streams done after ${first_s} s and ${second_s} s (the second: when both had ended)"

no_tests=5  # pytest's exit status when it collected nothing
if [ "$first_rc" -eq "$no_tests" ] && [ "$second_rc" -eq 0 ]; then first_rc=0; fi
if [ "$second_rc" -eq "$no_tests" ] && [ "$first_rc" -eq 0 ]; then second_rc=0; fi
[ "$first_rc" -ne 0 ] && exit "$first_rc"
exit "$second_rc"
