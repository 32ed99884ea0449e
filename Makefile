# Convenience wrappers; the README commands call scripts/dev.sh directly (no make needed).
.PHONY: demo test lint ui venv
demo: ; bash scripts/dev.sh demo
test: ; bash scripts/dev.sh test
lint: ; bash scripts/dev.sh lint
ui:   ; bash scripts/dev.sh ui
venv: ; bash scripts/bootstrap.sh
