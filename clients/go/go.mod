// For module-mode users with a network (go get / go mod tidy). Offline here, env.sh builds in
// GOPATH mode against Debian's packages instead, and this file is not read.
module github.com/ohmygpu/ohmygpu/clients/go

go 1.19

require (
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
