module hermit/tests/apps/reqlog

go 1.19
