module hermit/tests/apps/podprobe

go 1.19
