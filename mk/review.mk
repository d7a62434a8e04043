# Review targets (included by the Makefile, which defines VENV, PY, STAMP and `install`).
#   make review RUN=runs/x                  terminal summary + RUN/review.html (OUT=file.html)
#   make review-verify RUN=runs/x [PIN=h]   check the hash chain (PIN: a head hash printed before)
#   make review-approve RUN=runs/x FN=name@1 WHY="..." [BY=who]   (review-deny likewise)
#   make review-lock RUN=runs/x             RUN/library.lock.json of the approved final library
#   make review-export RUN=runs/x [OUT=f]   every record as JSONL (stdout by default)
#   make review-deps                        chromium and sqlite3 (browser and tamper tests);
#                                           `make test` depends on it
VENV ?= .venv
PY ?= $(VENV)/bin/python
REVIEW_NEEDS ?= $(if $(STAMP),install)
REVIEW_CLI := $(PY) -m optimizer review

.PHONY: review review-verify review-approve review-deny review-lock review-export review-deps

define review-need-run
	@test -n "$(RUN)" || { echo "usage: make $@ RUN=path/to/run (see mk/review.mk)" >&2; exit 2; }
endef

review: $(REVIEW_NEEDS)
	$(review-need-run)
	$(REVIEW_CLI) show "$(RUN)" $(if $(OUT),--out "$(OUT)")

review-verify: $(REVIEW_NEEDS)
	$(review-need-run)
	$(REVIEW_CLI) verify "$(RUN)" $(if $(PIN),--expect-head "$(PIN)")

review-approve review-deny: $(REVIEW_NEEDS)
	$(review-need-run)
	@test -n "$(FN)" -a -n "$(WHY)" || { echo "usage: make $@ RUN=... FN=name@1 WHY=\"...\" [BY=who]" >&2; exit 2; }
	$(REVIEW_CLI) $(subst review-,,$@) "$(RUN)" "$(FN)" --why "$(WHY)" $(if $(BY),--by "$(BY)")

review-lock: $(REVIEW_NEEDS)
	$(review-need-run)
	$(REVIEW_CLI) lock "$(RUN)" $(if $(OUT),--out "$(OUT)")

review-export: $(REVIEW_NEEDS)
	$(review-need-run)
	$(REVIEW_CLI) export "$(RUN)" $(if $(OUT),--out "$(OUT)")

# The browser test drives Debian's chromium headless; the tamper tests also use the sqlite3 tool.
review-deps:
	@command -v chromium >/dev/null && command -v sqlite3 >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium sqlite3)

test: review-deps
