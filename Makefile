# Developer interface. Everything here is also a plain command in README.md.
.PHONY: run test smoke format build

run:
	swift run parley

build:
	swift build

test:
	scripts/test

smoke:
	swift build && scripts/smoke.sh

format:
	swift format --in-place --recursive Sources Tests Package.swift
