/*
 * `flb completion bash|zsh`: shell completion scripts made from the command tree itself, so a
 * new subcommand or flag completes without anyone editing a script. The scripts are static: no
 * `flb` process runs at each Tab (Node's start-up would be felt).
 */
import type { Command } from 'commander';

export interface CompletionOption {
  /** `-o` and `--output`, whichever it has. */
  flags: string[];
  description: string;
  /** What its value is, when it takes one. */
  value?: { kind: 'file' | 'choice' | 'any'; choices?: string[] };
}

export interface CompletionNode {
  name: string;
  description: string;
  options: CompletionOption[];
  commands: CompletionNode[];
  /** Its positional arguments are files (`flb inject -`): complete files where no subcommand fits. */
  filesAsArguments: boolean;
  /** The values its first positional argument may take (`flb completion bash|zsh`). */
  argumentChoices: string[];
}

const FILE_VALUE = /file|path|dir|kubeconfig|config$|filename/i;

function optionNode(option: {
  short?: string;
  long?: string;
  flags: string;
  description: string;
  required: boolean;
  optional: boolean;
  argChoices?: string[];
}): CompletionOption {
  const flags = [option.short, option.long].filter((f): f is string => Boolean(f));
  const takesValue = option.required || option.optional;
  const valueName = /[<[]([^>\]]+)[>\]]/.exec(option.flags)?.[1] ?? '';
  const value: CompletionOption['value'] = !takesValue
    ? undefined
    : option.argChoices?.length
      ? { kind: 'choice', choices: option.argChoices }
      : FILE_VALUE.test(valueName) || FILE_VALUE.test(option.long ?? '')
        ? { kind: 'file' }
        : { kind: 'any' };
  return { flags, description: option.description, ...(value ? { value } : {}) };
}

/** The tree a completion script is made from, read from commander's commands and options. */
export function completionTree(command: Command): CompletionNode {
  const options = command.options.filter((o) => !o.hidden).map((o) => optionNode(o));
  if (!options.some((o) => o.flags.includes('--help'))) options.push({ flags: ['-h', '--help'], description: 'display help for command' });
  return {
    name: command.name(),
    description: command.summary() || command.description().split('\n')[0]!,
    options,
    commands: command.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => completionTree(c)),
    filesAsArguments: command.registeredArguments.some((a) => FILE_VALUE.test(a.name())),
    argumentChoices: command.registeredArguments[0]?.argChoices ?? [],
  };
}

function walk(node: CompletionNode, path: string[] = [node.name]): { path: string; node: CompletionNode }[] {
  return [{ path: path.join(' '), node }, ...node.commands.flatMap((c) => walk(c, [...path, c.name]))];
}

/** Single-quoted for the shell. */
const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;
/** Descriptions on one line, short, with no colon left unescaped (zsh's _describe splits on it). */
const describe = (text: string) => {
  const line = text.replace(/\s+/g, ' ').trim();
  const short = line.length > 80 ? `${line.slice(0, 77)}...` : line;
  return short.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
};

function valueCases(nodes: { path: string; node: CompletionNode }[]): string[] {
  const cases: string[] = [];
  for (const { path, node } of nodes)
    for (const option of node.options) {
      if (!option.value) continue;
      const answer = option.value.kind === 'choice' ? `choice ${option.value.choices!.join(' ')}` : option.value.kind;
      cases.push(`    ${option.flags.map((f) => quote(`${path} ${f}`)).join('|')}) echo ${quote(answer)} ;;`);
    }
  return cases;
}

export function bashCompletion(root: CompletionNode): string {
  const nodes = walk(root);
  const name = root.name;
  const fn = `__${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  return `# bash completion for ${name}: source <(${name} completion bash), or write it to /etc/bash_completion.d/${name}
${fn}_commands() {
  case "$1" in
${nodes
  .filter(({ node }) => node.commands.length)
  .map(({ path, node }) => `    ${quote(path)}) echo ${quote(node.commands.map((c) => c.name).join(' '))} ;;`)
  .join('\n')}
  esac
}
${fn}_options() {
  case "$1" in
${nodes.map(({ path, node }) => `    ${quote(path)}) echo ${quote(node.options.flatMap((o) => o.flags).join(' '))} ;;`).join('\n')}
  esac
}
${fn}_files_as_arguments() {
  case "$1" in
${nodes
  .filter(({ node }) => node.filesAsArguments)
  .map(({ path }) => `    ${quote(path)}) return 0 ;;`)
  .join('\n')}
  esac
  return 1
}
${fn}_argument_choices() {
  case "$1" in
${nodes
  .filter(({ node }) => node.argumentChoices.length)
  .map(({ path, node }) => `    ${quote(path)}) echo ${quote(node.argumentChoices.join(' '))} ;;`)
  .join('\n')}
  esac
}
# none, file, any, or "choice A B C": what the option given after the command path takes.
${fn}_value() {
  case "$1 $2" in
${valueCases(nodes).join('\n')}
    *) echo none ;;
  esac
}
_${fn.slice(2)}() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" option="" path=${quote(name)} skip=0 i word value
  (( COMP_CWORD > 0 )) && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # --option=value: bash splits at '=' (COMP_WORDBREAKS), so the option is two words back.
  if [[ "$cur" == "=" ]]; then prev="\${COMP_WORDS[COMP_CWORD-1]}="; cur=""; fi
  if [[ "$prev" == "=" && COMP_CWORD -ge 2 ]]; then prev="\${COMP_WORDS[COMP_CWORD-2]}="; fi
  for (( i=1; i<COMP_CWORD; i++ )); do
    word="\${COMP_WORDS[i]}"
    if (( skip )); then skip=0; continue; fi
    case "$word" in
      =) ;;
      -*) [[ "$(${fn}_value "$path" "$word")" != none && "\${COMP_WORDS[i+1]}" != "=" ]] && skip=1 ;;
      *) [[ " $(${fn}_commands "$path") " == *" $word "* ]] && path="$path $word" ;;
    esac
  done
  COMPREPLY=()
  if [[ "$prev" == -* ]]; then
    option="\${prev%=}"
    value="$(${fn}_value "$path" "$option")"
    case "$value" in
      file) compopt -o filenames 2>/dev/null; COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
      choice\\ *) COMPREPLY=( $(compgen -W "\${value#choice }" -- "$cur") ); return 0 ;;
      any) return 0 ;;
    esac
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$(${fn}_options "$path")" -- "$cur") )
  elif [[ -n "$(${fn}_commands "$path")" ]]; then
    COMPREPLY=( $(compgen -W "$(${fn}_commands "$path")" -- "$cur") )
  elif [[ -n "$(${fn}_argument_choices "$path")" ]]; then
    COMPREPLY=( $(compgen -W "$(${fn}_argument_choices "$path")" -- "$cur") )
  elif ${fn}_files_as_arguments "$path"; then
    compopt -o filenames 2>/dev/null; COMPREPLY=( $(compgen -f -- "$cur") )
  fi
  return 0
}
complete -F _${fn.slice(2)} ${name}
`;
}

export function zshCompletion(root: CompletionNode): string {
  const nodes = walk(root);
  const name = root.name;
  const fn = `__${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const lines = (items: string[]) => quote(items.join('\n'));
  return `#compdef ${name}
# zsh completion for ${name}: source <(${name} completion zsh), or write it as _${name} into a folder of $fpath
${fn}_commands() {
  case "$1" in
${nodes
  .filter(({ node }) => node.commands.length)
  .map(({ path, node }) => `    ${quote(path)}) print -r -- ${lines(node.commands.map((c) => `${c.name}:${describe(c.description)}`))} ;;`)
  .join('\n')}
  esac
}
${fn}_options() {
  case "$1" in
${nodes
  .map(({ path, node }) => `    ${quote(path)}) print -r -- ${lines(node.options.flatMap((o) => o.flags.map((f) => `${f}:${describe(o.description)}`)))} ;;`)
  .join('\n')}
  esac
}
${fn}_files_as_arguments() {
  case "$1" in
${nodes
  .filter(({ node }) => node.filesAsArguments)
  .map(({ path }) => `    ${quote(path)}) return 0 ;;`)
  .join('\n')}
  esac
  return 1
}
${fn}_argument_choices() {
  case "$1" in
${nodes
  .filter(({ node }) => node.argumentChoices.length)
  .map(({ path, node }) => `    ${quote(path)}) print -r -- ${quote(node.argumentChoices.join(' '))} ;;`)
  .join('\n')}
  esac
}
${fn}_value() {
  case "$1 $2" in
${valueCases(nodes).join('\n')}
    *) echo none ;;
  esac
}
_${fn.slice(2)}() {
  local cmdpath=${quote(name)} skip=0 i word value option cur="\${words[CURRENT]}" prev="\${words[CURRENT-1]}"
  local -a entries
  for (( i=2; i<CURRENT; i++ )); do
    word="\${words[i]}"
    if (( skip )); then skip=0; continue; fi
    case "$word" in
      --*=*) ;;
      -*) [[ "$(${fn}_value "$cmdpath" "$word")" != none ]] && skip=1 ;;
      *) entries=( \${(f)"$(${fn}_commands "$cmdpath")"} ); (( \${entries[(I)$word:*]} )) && cmdpath="$cmdpath $word" ;;
    esac
  done
  if [[ "$cur" == --*=* ]]; then
    option="\${cur%%=*}"; cur="\${cur#*=}"; compset -P '*='
  elif [[ "$prev" == -* ]]; then
    option="$prev"
  fi
  if [[ -n "$option" ]]; then
    value="$(${fn}_value "$cmdpath" "$option")"
    case "$value" in
      file) _files; return ;;
      choice\\ *) compadd -- \${=value#choice }; return ;;
      any) return 1 ;;
    esac
  fi
  if [[ "$cur" == -* ]]; then
    entries=( \${(f)"$(${fn}_options "$cmdpath")"} )
    _describe -t options option entries
  else
    entries=( \${(f)"$(${fn}_commands "$cmdpath")"} )
    if (( \${#entries} )); then
      _describe -t commands command entries
    elif [[ -n "$(${fn}_argument_choices "$cmdpath")" ]]; then
      compadd -- \${=$(${fn}_argument_choices "$cmdpath")}
    elif ${fn}_files_as_arguments "$cmdpath"; then
      _files
    fi
  fi
}
if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then
  _${fn.slice(2)} "$@"
else
  compdef _${fn.slice(2)} ${name}
fi
`;
}
