module createos/jailer

go 1.19
