module hermit/tests/apps/httpserve

go 1.19
