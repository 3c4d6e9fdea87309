module createos/agent

go 1.19
