// Package omg is a Go client for the ohmygpu daemon's gRPC API: the services generated from
// proto/ into gen/ (./generate.sh), over one connection made the way the Python CLI makes it
// (services/ohmygpu/cli/client.py):
//
//	OMG_HOST    host[:port] or grpcs://host[:port] (port 11435 when left out); else OMG_GRPC_ADDR,
//	            else 127.0.0.1:11435. grpcs:// or https://, or OMG_TLS_CA, means TLS.
//	OMG_TOKEN   sent as "authorization: Bearer <token>" on every call.
//	OMG_TLS_CA  a PEM file of the CA to trust (the system roots when empty).
package omg

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	apiv1 "github.com/ohmygpu/ohmygpu/clients/go/gen/ohmygpu/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DefaultPort is the daemon's gRPC port.
const DefaultPort = "11435"

// Options say where the daemon is and how to reach it; FromEnv fills them from OMG_*.
type Options struct {
	Host  string // host[:port] or grpcs://host[:port]
	Token string // bearer token (OMG_TOKEN)
	TLSCA string // PEM file of the CA to trust (OMG_TLS_CA); set means TLS
}

// FromEnv reads OMG_HOST (else OMG_GRPC_ADDR), OMG_TOKEN and OMG_TLS_CA.
func FromEnv() Options {
	host := os.Getenv("OMG_HOST")
	if host == "" {
		host = os.Getenv("OMG_GRPC_ADDR")
	}
	if host == "" {
		host = "127.0.0.1:" + DefaultPort
	}
	return Options{Host: host, Token: os.Getenv("OMG_TOKEN"), TLSCA: os.Getenv("OMG_TLS_CA")}
}

// Target is the host:port to dial and whether to use TLS, as the CLI reads OMG_HOST.
func Target(host, tlsCA string) (string, bool, error) {
	raw := strings.TrimSpace(host)
	scheme, rest := "", raw
	if i := strings.Index(raw, "://"); i >= 0 {
		scheme, rest = raw[:i], raw[i+3:]
	}
	switch scheme {
	case "", "grpc", "grpcs", "http", "https":
	default:
		return "", false, fmt.Errorf("OMG_HOST %q: use host[:port] or grpcs://host[:port]", raw)
	}
	rest = strings.TrimRight(rest, "/")
	hasPort := strings.Count(rest, ":") == 1
	if strings.HasPrefix(rest, "[") {
		hasPort = strings.Contains(rest, "]:")
	}
	if !hasPort {
		rest += ":" + DefaultPort
	}
	return rest, scheme == "grpcs" || scheme == "https" || tlsCA != "", nil
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Client holds a stub per service of the daemon, over one connection.
type Client struct {
	Conn       *grpc.ClientConn
	Models     apiv1.ModelServiceClient
	Chat       apiv1.ChatServiceClient
	System     apiv1.SystemServiceClient
	Jobs       apiv1.JobServiceClient
	Events     apiv1.EventServiceClient
	Runs       apiv1.RunServiceClient
	Embeddings apiv1.EmbeddingServiceClient
	Audio      apiv1.AudioServiceClient
	Images     apiv1.ImageServiceClient
}

// Dial connects (lazily: the first call finds out whether a daemon answers).
func Dial(o Options) (*Client, error) {
	addr, secure, err := Target(o.Host, o.TLSCA)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{}))}
	switch {
	case secure && o.TLSCA != "":
		creds, err := credentials.NewClientTLSFromFile(o.TLSCA, "")
		if err != nil {
			return nil, fmt.Errorf("cannot read OMG_TLS_CA %s: %w", o.TLSCA, err)
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	case secure:
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{})))
	default:
		opts = append(opts, grpc.WithInsecure())
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{o.Token, secure}))
	}
	conn, err := grpc.Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{
		Conn:       conn,
		Models:     apiv1.NewModelServiceClient(conn),
		Chat:       apiv1.NewChatServiceClient(conn),
		System:     apiv1.NewSystemServiceClient(conn),
		Jobs:       apiv1.NewJobServiceClient(conn),
		Events:     apiv1.NewEventServiceClient(conn),
		Runs:       apiv1.NewRunServiceClient(conn),
		Embeddings: apiv1.NewEmbeddingServiceClient(conn),
		Audio:      apiv1.NewAudioServiceClient(conn),
		Images:     apiv1.NewImageServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }
