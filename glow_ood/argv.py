"""Reading flags from argv before absl parses it: choosing which config file --config names.

config_flags loads the --config file while absl parses, and applies the
--config.<key> overrides to it then; so a default config file has to be
placed in argv before parsing. Both commands do that here: the launcher (the
workdir's recorded config) and the experiment command (the pair's file).
"""


def flag_value(argv, name: str) -> str | None:
  """The value of --name=value or --name value in argv, the last one winning."""
  value = None
  for index, arg in enumerate(argv[1:], start=1):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and index + 1 < len(argv):
      value = argv[index + 1]
  return value


def with_config(argv, config_path: str) -> list[str]:
  """argv with --config=config_path, unless it already names a --config."""
  if flag_value(argv, 'config') is not None:
    return list(argv)
  return [argv[0], f'--config={config_path}'] + list(argv[1:])
