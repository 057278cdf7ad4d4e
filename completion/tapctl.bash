# bash completion for tapctl(1). Installed as /usr/share/bash-completion/completions/tapctl.
# Subcommands and options as `tapctl help COMMAND` lists them (test/completion.test.ts checks
# that they agree); network names from the daemon: `tapctl networks --names` prints the ones
# the caller may use, one per line, and prints nothing where tapd is not reachable.

_tapctl_networks() {
  # The socket the command line names, if any: ask the same daemon.
  local i sock=()
  for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
    case ${COMP_WORDS[i]} in
      --socket) sock=(--socket "${COMP_WORDS[i + 1]}") ;;
      --socket=*) sock=("${COMP_WORDS[i]}") ;;
    esac
  done
  "${COMP_WORDS[0]}" "${sock[@]}" networks --names 2>/dev/null </dev/null
}

_tapctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
  local commands='qemu run list networks status check revoke reload attach detach help'
  local global='--socket --version --help'
  local tap='--network -b --mac --mtu --queues --vhost --port'
  local nic='--vnet-hdr --no-vnet-hdr --id --nic'
  local more="$nic --dry-run --verbose -v"
  local -A opts=(
    [qemu]="$tap --model --device-opt $more --qemu --user-net --redir --help"
    [run]="$tap $more --help"
    [list]='--user --json --help'
    [networks]='--names --json --help'
    [status]='--json --help'
    [check]="$tap --model --device-opt $nic --json --help"
    [revoke]='--user --network -b --json --help'
    [reload]='--help'
    [attach]='--qmp --network -b --model --mac --queues --id --help'
    [detach]='--qmp --help'
    [help]=''
  )
  # Options that take a value (the next word is not a subcommand or an option).
  local valued=' --socket --network -b --mac --mtu --queues --port --model --device-opt --id --nic --qemu --redir --user --qmp '

  local i cmd='' after_dashdash=''
  for ((i = 1; i < COMP_CWORD; i++)); do
    local w=${COMP_WORDS[i]}
    if [[ $w == -- ]]; then after_dashdash=$i; break; fi
    if [[ $valued == *" $w "* ]]; then ((i++)); continue; fi
    if [[ -z $cmd && $w != -* ]]; then cmd=$w; fi
  done

  COMPREPLY=()
  if [[ -n $after_dashdash ]]; then
    # The emulator's or the command's own arguments.
    if [[ $cmd == run && $after_dashdash == $((COMP_CWORD - 1)) ]]; then
      mapfile -t COMPREPLY < <(compgen -c -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
  fi

  case $prev in
    -b | --network)
      mapfile -t COMPREPLY < <(compgen -W "$(_tapctl_networks)" -- "$cur")
      return 0 ;;
    --model)
      mapfile -t COMPREPLY < <(compgen -W "$("${COMP_WORDS[0]}" qemu --model help 2>/dev/null </dev/null)" -- "$cur")
      return 0 ;;
    --socket)
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
      return 0 ;;
    --qemu)
      mapfile -t COMPREPLY < <(compgen -c -- "$cur")
      return 0 ;;
    --mac | --mtu | --queues | --id | --nic | --redir)
      return 0 ;;
  esac

  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$global" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    fi
  elif [[ $cmd == help ]]; then
    mapfile -t COMPREPLY < <(compgen -W "${commands% help}" -- "$cur")
  elif [[ -n ${opts[$cmd]+x} ]]; then
    if [[ $cur == -* || ( $cmd != qemu && $cmd != run ) ]]; then
      mapfile -t COMPREPLY < <(compgen -W "${opts[$cmd]}" -- "$cur")
    fi
  fi
  return 0
}

complete -F _tapctl tapctl
