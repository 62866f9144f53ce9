// argocd-health runs an Argo CD resource health script the way Argo CD does: in gopher-lua
// (the Lua 5.1 interpreter Argo CD embeds), with the object decoded by gopher-json into the
// global `obj`, only the libraries Argo CD opens, and the script's returned table read as
// {status, message}.
//
//	argocd-health SCRIPT < object.json   →   prints "status|message"
//
// Exit codes: 0 ok, 1 the script failed or returned something that is not a health table,
// 2 usage or input error. Built from the Go module proxy (see docs/argocd.md); never committed.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// Argo CD's health statuses (util/lua: a script returning anything else is an error there too).
var valid = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

func run(scriptPath string, in io.Reader) (string, string, error) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return "", "", err
	}
	raw, err := io.ReadAll(in)
	if err != nil {
		return "", "", err
	}
	var obj interface{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", "", fmt.Errorf("object on stdin is not JSON: %w", err)
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// the libraries Argo CD's VM opens (util/lua: package, base, table, string, math)
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		l.Push(l.NewFunction(lib.fn))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", luajson.DecodeValue(l, obj))
	if err := l.DoString(string(script)); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	status := lua.LVAsString(ret.RawGetString("status"))
	if !valid[status] {
		return "", "", fmt.Errorf("Lua returned an invalid health status %q", status)
	}
	return status, lua.LVAsString(ret.RawGetString("message")), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health SCRIPT.lua < object.json")
		os.Exit(2)
	}
	status, message, err := run(os.Args[1], os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
	fmt.Printf("%s|%s", status, message)
}
