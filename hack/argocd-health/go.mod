module github.com/mlops-operator/mlops-operator/hack/argocd-health

go 1.22

require (
	github.com/yuin/gopher-lua v1.1.1
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
