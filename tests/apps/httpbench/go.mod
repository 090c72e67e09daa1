module hermit/tests/apps/httpbench

go 1.19
