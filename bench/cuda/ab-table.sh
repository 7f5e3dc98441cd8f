#!/usr/bin/env bash
# The table of a call-ab.sh call's train steps: per set, the median of its rounds (char, copy ms) and every
# round, from the bench-SET-ROUND.log files it left in the results folder (the device tool's res/).
#   bash bench/cuda/ab-table.sh RESULTS_DIR
set -euo pipefail
dir=$1
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
printf '%-54s %8s %8s   %s\n' set char copy 'char rounds | copy rounds'
for f in $(ls "$dir"/bench-*-1.log | sort); do
  set=$(basename "$f" -1.log); set=${set#bench-}
  char=""; copy=""
  for r in "$dir"/bench-"$set"-*.log; do
    char+=" $(awk '$1 == "char" && $2 == "ours" {print $4}' "$r")"
    copy+=" $(awk '$1 == "copy" && $2 == "ours" {print $4}' "$r")"
  done
  printf '%-54s %8s %8s  %s |%s\n' "$set" "$(echo $char | med)" "$(echo $copy | med)" "$char" "$copy"
done
