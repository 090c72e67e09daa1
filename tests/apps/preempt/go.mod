module hermit/tests/apps/preempt

go 1.19
