# Shared by the launch scripts: print-or-run, and argument checks. Source it; do not run it.

DRY_RUN=${DRY_RUN:-0}

# Quotes one word for the shell: as is when safe, else in single quotes, else in double quotes.
quote() {
  local a=$1 q="'"
  if [[ -n "$a" && "$a" =~ ^[A-Za-z0-9_@%+=:,./~-]+$ && "$a" != '~'* ]]; then
    echo "$a"
  elif [[ "$a" != *"'"* ]]; then
    echo "'$a'"
  elif [[ ! "$a" =~ [\"\$\`\\!] ]]; then
    echo "\"$a\""
  else
    echo "'${a//$q/$q\\$q$q}'"
  fi
}

# Prints a command as one shell line (`--flag=value` keeps the flag outside the quotes).
show() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      out+=("${BASH_REMATCH[1]}$(quote "${BASH_REMATCH[2]}")")
    else
      out+=("$(quote "$a")")
    fi
  done
  echo "${out[*]}"
}

# Runs a command, or only prints it under --dry-run (prefixed with '+ ' when run for real).
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    show "$@"
  else
    echo "+ $(show "$@")" >&2
    "$@"
  fi
}

# mesh_args N: the train arguments that tell amber_jax.parallel.mesh how many slices (TPU slices,
# or GPU nodes) the run spans. They go before the user's arguments, which may override them.
mesh_args() {
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "slice count must be a positive integer; got '$1'"
  echo "--config.mesh.num_slices=$1"
}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# need NAME VALUE: fails naming the missing --flag.
need() {
  [[ -n "$2" ]] || die "missing --$1 (see --help)"
}

# Prints the comment block at the top of the calling script (its usage).
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}
