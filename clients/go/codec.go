package omg

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// codec marshals with the protobuf APIv2 runtime (google.golang.org/protobuf), which the
// generated code is written for. Debian's grpc 1.33 defaults to github.com/golang/protobuf 1.3,
// which reads struct tags and panics on APIv2 messages ("protobuf tag not enough fields").
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("omg: cannot marshal %T: not a protobuf message", v)
	}
	return proto.Marshal(m)
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("omg: cannot unmarshal into %T: not a protobuf message", v)
	}
	return proto.Unmarshal(data, m)
}

func (codec) Name() string { return "proto" }
