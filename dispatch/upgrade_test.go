package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A WebSocket echo through a gateway without a runner (over QUIC to one)
// and in place on a runner, with messages larger than a frame.
func TestProxyWebSocket(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		conn.SetReadLimit(1 << 20)
		_ = conn.Write(r.Context(), websocket.MessageText, []byte("hello"))
		for {
			typ, b, err := conn.Read(r.Context())
			if err != nil {
				return
			}
			if err := conn.Write(r.Context(), typ, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	}))
	defer echo.Close()
	for _, mode := range []string{"remote", "local"} {
		t.Run(mode, func(t *testing.T) {
			c := newTCluster(t)
			gw := c.add("gw", mode == "local", nil)
			if mode == "remote" {
				c.add("r1", true, nil)
			}
			svc := c.define(Service{Name: "ws", Type: TypeHTTP, Upstream: echo.URL})
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := gw.d.ProxyHTTP(w, r, testCluster, svc, "/"); err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
				}
			}))
			defer front.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(front.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			conn.SetReadLimit(1 << 20)
			if _, b, err := conn.Read(ctx); err != nil || string(b) != "hello" {
				t.Fatalf("greeting %q %v", b, err)
			}
			for i := 0; i < 4; i++ {
				msg := fmt.Sprintf("m%d-%s", i, strings.Repeat("x", i*100000))
				if err := conn.Write(ctx, websocket.MessageBinary, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				if _, b, err := conn.Read(ctx); err != nil || string(b) != "echo:"+msg {
					t.Fatalf("echo %d: %d bytes, %v", i, len(b), err)
				}
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
		})
	}
}
