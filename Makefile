# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
#
# torch is installed first and pinned: an unpinned torch pulls a CUDA build of several GB,
# and this project never needs a GPU.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# What the microphone tests (a PulseAudio null sink is the microphone) and the flite and festival engines need besides
# the Python packages (the festival voices: collect/festival_tts.py, VOICES).
FESTIVAL_PACKAGES := festival festvox-kallpc16k festvox-kdlpc16k festvox-czech-dita festvox-czech-krb festvox-czech-machac \
	festvox-czech-ph festvox-italp16k festvox-itapc16k festvox-suopuhe-lj festvox-suopuhe-mv
APT_PACKAGES := pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins flite $(FESTIVAL_PACKAGES)

.PHONY: setup lock system-deps demo test bench clean

# constraints.txt pins every other package: unpinned, a fresh install moved the demo's and the benchmark's figures.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/.installed

# Rewrites constraints.txt from the venv (after changing a dependency in pyproject.toml).
lock: setup
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# Installs the system packages (audio, flite, festival) when they are missing and we may (root); otherwise says what is missing.
system-deps:
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "system packages: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null) && echo "system packages: installed"; \
	else \
		echo "system packages missing ($(APT_PACKAGES)): the microphone, flite and festival tests will be skipped"; \
	fi

demo: setup
	$(BIN)/kws demo

test: setup system-deps
	$(BIN)/python -m pytest

# The cost benchmark against openWakeWord and microWakeWord (installed into benchmarks/.venv-against
# on first use), on the model `make demo` made.
bench: setup
	$(BIN)/kws bench runs/demo-computer/model.onnx --against openwakeword,microwakeword

clean:
	rm -rf runs .pytest_cache
