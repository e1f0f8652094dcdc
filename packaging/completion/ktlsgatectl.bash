# bash completion for ktlsgatectl(8): subcommands of the control-socket interface.
_ktlsgatectl()
{
	local cur prev words cword
	_init_completion || return

	case $prev in
	--socket)
		_filedir sock
		return
		;;
	esac

	# The words after the options: the command path typed so far.
	local i cmd=()
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--socket) ((i++)) ;;
		-*) ;;
		*) cmd+=("${words[i]}") ;;
		esac
	done

	case "${cmd[*]}" in
	"")
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '--socket --json --help --version' -- "$cur"))
		else
			COMPREPLY=($(compgen -W 'show cert ca crl policy reload conn drain metrics' -- "$cur"))
		fi
		;;
	show) COMPREPLY=($(compgen -W 'info stats certs conns' -- "$cur")) ;;
	cert) COMPREPLY=($(compgen -W 'begin set commit abort' -- "$cur")) ;;
	ca | crl | policy) COMPREPLY=($(compgen -W 'set' -- "$cur")) ;;
	conn) COMPREPLY=($(compgen -W 'kill' -- "$cur")) ;;
	"conn kill") COMPREPLY=($(compgen -W 'id identity serial' -- "$cur")) ;;
	"cert set "* | "ca set "* | "crl set "* | "policy set "*) _filedir ;;
	esac
} &&
	complete -F _ktlsgatectl ktlsgatectl
