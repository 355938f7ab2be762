#!/usr/bin/env bash
# Table "language_modeling": the GPT-style decoder on WikiText-2 (files under $REPL_DATA/wikitext2).
source "$(dirname "$0")/_common.sh"
table wikitext2_lm
