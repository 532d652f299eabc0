# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# GPU=1: a separate .venv-gpu with TensorFlow's CUDA wheels instead of tensorflow-cpu (the CPU default is unchanged).
GPU    ?= 0
VENV   := $(if $(filter 1,$(GPU)),.venv-gpu,.venv)
PY     := $(VENV)/bin/python
MAMMO  := $(VENV)/bin/mammo
STAMP  := $(VENV)/.installed
PROFILE ?= demo
WORKDIR ?= work/$(PROFILE)
REGISTRY ?= localhost:5000
VERSION ?= $(shell $(PY) -c "import common; print(common.__version__)" 2>/dev/null || echo dev)
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
# The step images to build, from the step registry (common/steps.py: standard library only, any python3 runs it).
IMAGE_STEPS = $(shell python3 -m common.steps images)
GPU_STEPS = $(shell python3 -m common.steps gpu-images)

.PHONY: run test lint bench argo constraints images cpu-images base-image image-test kind-test system-deps \
        container-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(GPU),1)
	$(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  extra = p['optional-dependencies']; \
	  deps = p['dependencies'] + [d for k in ('model', 'argo', 'test') for d in extra[k] if not d.startswith('mammo-')]; \
	  print('\n'.join(d for d in deps if not d.startswith('tensorflow-cpu')))" > $(VENV)/requirements-gpu.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-gpu.txt 'tensorflow[and-cuda]>=2.18,<3'
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU') or 'none found')"
else
	$(PY) -m pip install -q -e '.[test]'
endif
	touch $(STAMP)

# Debian services the tests start on loopback (Pushgateway) and the headless browser for report screenshots.
system-deps:
	@command -v prometheus-pushgateway >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus-pushgateway)

run: $(STAMP)
	$(MAMMO) pipeline run --profile $(PROFILE) --workdir $(WORKDIR)

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

# Re-render the Argo objects from common/pipeline.py (the kustomize base installs copies of two of them).
argo: $(STAMP)
	$(PY) -m common.argo_render argo/ manifests/base/

# The exact versions the container images install (pip constraints), taken from a working .venv.
constraints: $(STAMP)
	(echo "# Exact versions baked into the container images (Dockerfile.cpu/.gpu use this as pip constraints)."; \
	 echo "# Regenerate from a working .venv with: make constraints"; \
	 $(VENV)/bin/pip freeze --exclude-editable | grep -v '^mammo-domain-shift') > constraints.txt

# Container images (common/images.py): the published python base image, else one built here from Debian with
# debootstrap; the engine flags this host needs are probed, not assumed. Builds use the host network and CA bundle.
container-deps:
	@(command -v podman && command -v runc && command -v debootstrap) >/dev/null 2>&1 || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap) || \
	  echo "container-deps: could not install podman, runc and debootstrap; the image tests will skip" >&2

base-image: container-deps
	python3 -m common.images base

images: container-deps
	python3 -m common.images build --steps "$(IMAGE_STEPS)" --gpu-steps "$(GPU_STEPS)" --registry $(REGISTRY) \
	  --tag $(VERSION)

cpu-images: container-deps
	python3 -m common.images build --steps "$(IMAGE_STEPS)" --registry $(REGISTRY) --tag $(VERSION)

# Builds the base and every CPU image, runs the ci pipeline as containers through a loopback S3 and Pushgateway
# and compares it with the same run in-process (tests/integration/test_images.py); skips where no container can run.
image-test: $(STAMP) system-deps container-deps
	MAMMO_IMAGE_TEST=1 $(VENV)/bin/pytest -q -rs -m containers tests/integration/test_images.py

kind-test: $(STAMP)
	$(VENV)/bin/pytest -q tests/kind -m kind

clean:
	rm -rf work
