# Deployment artefacts (Dockerfile, deploy/k8s, SENTRY.md's PrometheusRule), checked by real tools.
# `make deploy-check` runs them all; deploy/README.md says what each step proves and how long it takes.
DEPLOY_VENV := .venv-deploy
DEPLOY_BIN := $(DEPLOY_VENV)/bin
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed

.PHONY: deploy-check deploy-tools deploy-hadolint deploy-manifests deploy-checkov deploy-image

# A venv of its own: checkov's dependency pins must not touch the project's .venv.
$(DEPLOY_STAMP): deploy/requirements-tools.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	printf '*\n' > $(DEPLOY_VENV)/.gitignore
	$(DEPLOY_BIN)/pip install --quiet --upgrade pip
	$(DEPLOY_BIN)/pip install --quiet -r deploy/requirements-tools.txt
	touch $@

deploy-tools: $(DEPLOY_STAMP)

deploy-hadolint: deploy-tools
	$(DEPLOY_BIN)/hadolint Dockerfile

# kubectl kustomize + kubernetes-validate --strict + CRD schemas + wiring + promtool; needs the
# project's alertd (check-config on the ConfigMap) and promtool (make tools).
deploy-manifests: deploy-tools setup tools
	$(DEPLOY_BIN)/python deploy/check-manifests.py --alertd $(BIN)/alertd

deploy-checkov: deploy-tools
	$(DEPLOY_BIN)/checkov -d . --framework kubernetes,dockerfile --skip-download

# buildah build on a cached debootstrap base, then run the image (root; installs buildah, debootstrap).
deploy-image:
	deploy/image-check.sh

deploy-check: deploy-hadolint deploy-manifests deploy-checkov deploy-image

TEST_EXTRA += deploy-check
