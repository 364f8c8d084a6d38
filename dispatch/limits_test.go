package dispatch

import (
	"errors"
	"testing"
)

func TestLimitsValidationNamesTheField(t *testing.T) {
	for body, field := range map[string]string{
		`{"name":"s","type":"exec","command":["x"],"limits":[{"rate":5,"per":"2s"}]}`:                       "limits[0].per",
		`{"name":"s","type":"exec","command":["x"],"limits":[{"rate":5,"per":"1s"},{"rate":0,"per":"1m"}]}`: "limits[1].rate",
		`{"name":"s","type":"exec","command":["x"],"limits":[{"rate":5,"per":"1s","by":"user"}]}`:           "limits[0].by",
		`{"name":"s","type":"exec","command":["x"],"limits":[{"rate":5,"per":"1s","burst":-1}]}`:            "limits[0].burst",
		`{"name":"s","type":"exec","command":["x"],"max_in_flight":-1}`:                                     "max_in_flight",
		`{"name":"s","type":"exec","command":["x"],"limits":[{"rate":5,"per":"1s"}],"on_manager_loss":"x"}`: "on_manager_loss",
		`{"name":"s","type":"exec","command":["x"],"on_manager_loss":"deny"}`:                               "on_manager_loss",
	} {
		_, err := ParseService([]byte(body))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != field {
			t.Errorf("%s: got %v, want an error naming %s", body, err, field)
		}
	}
	if _, err := ParseService([]byte(`{"name":"s","type":"exec","command":["x"],"max_in_flight":4,
		"limits":[{"rate":50,"per":"1s","burst":5},{"rate":1000,"per":"30d","by":"ip"}],"on_manager_loss":"deny"}`)); err != nil {
		t.Fatal(err)
	}
}
