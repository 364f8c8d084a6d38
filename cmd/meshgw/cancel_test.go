package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// executions cancel POSTs to the cancel route and prints the record; a
// 409 already_finished is an error; watch takes cancelled for an end.
func TestExecutionsCancel(t *testing.T) {
	const id = "18edb9c4f7d542891f5a76dd"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/executions/"+id+"/cancel":
			w.Write([]byte(`{"execution_id":"` + id + `","status":"cancelled"}`))
		case r.Method == "POST" && r.URL.Path == "/v1/executions/"+id+"0/cancel":
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"code":"already_finished","error":"execution is succeeded"}`))
		case r.URL.Path == "/v1/executions/"+id+"/watch":
			w.Write([]byte(`{"execution":{"execution_id":"` + id + `","status":"cancelled","exit_code":-1}}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	out, errOut, code := runCLI("executions", "cancel", id, "-http-addr", addr)
	if code != 0 || !strings.Contains(out, `"cancelled"`) {
		t.Fatalf("cancel: exit %d, %q %q", code, out, errOut)
	}
	out, errOut, code = runCLI("executions", "cancel", id+"0", "-http-addr", addr)
	if code == 0 || !strings.Contains(errOut, "already_finished") && !strings.Contains(errOut, "succeeded") {
		t.Fatalf("cancel of a finished run: exit %d, %q %q", code, out, errOut)
	}
	_, errOut, code = runCLI("executions", "watch", id, "-http-addr", addr)
	if code != 1 || strings.Contains(errOut, "stream ended before") || !strings.Contains(errOut, "cancelled") {
		t.Fatalf("watch of a cancelled run: exit %d, %q", code, errOut)
	}
}
