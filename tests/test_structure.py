"""The house rules, read from the sources: imports run one way, no cycles, no private reaches,
in-function imports only for heavy optional dependencies, no module over 450 lines."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'amber_jax'

# Lower layers never import higher ones: cli -> experiments -> training / eval / export ->
# data / corpora -> parallel / text -> core -> config. Same-layer imports are allowed, cycles not.
LAYERS = {
    'config': 0, 'paths': 0, 'errors': 0, 'storage': 0, 'quiet': 0,
    'core': 1,
    'parallel': 2, 'text': 2,
    'data': 3, 'corpora': 3,
    'training': 4, 'eval': 4, 'export': 4,
    'experiments': 5,
    'cli': 6,
}
# What an import inside a function may bring in: only what keeps TensorFlow (or another heavy,
# optional dependency) off the training core and off `amber-jax --help`.
# (tensorboardX imports torch whenever torch is installed; `tasks` modules register seqio tasks.)
HEAVY = ('tensorflow', 'tensorflow_datasets', 'seqio', 'torch', 'transformers', 'matplotlib',
         'tensorboardX', 'apache_beam', 'tasks',
         'grain', 'array_record',  # the cache's reader: not on the GPU machines
         'faiss',  # `amber-jax mine` only
         'eflomal',  # the teacher of configs/align.py: a native build, not on the GPU machines
         'pysword',  # the Bible corpus of benchmarks/word_alignment.py
         'jax.experimental.pallas')  # TPU kernels: their modules move between jax releases
MAX_LINES = 450


def _modules() -> dict[str, ast.Module]:
  found = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(ROOT).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    found[name] = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
  return found


MODULES = _modules()


def _layer(module: str) -> int:
  part = module.split('.')[1] if '.' in module else 'config'
  assert part in LAYERS, f'{module}: its folder {part!r} has no layer in LAYERS; add it there'
  return LAYERS[part]


def _imports(tree: ast.Module):
  """(imported module, line, inside a function?, names) for each import statement."""
  parents = {}
  for node in ast.walk(tree):
    for child in ast.iter_child_nodes(node):
      parents[child] = node

  def in_function(node):
    while node in parents:
      node = parents[node]
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    return False

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno, in_function(node), []
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [a.name for a in node.names]
      # `from amber_jax.text import vocab` imports the module amber_jax.text.vocab.
      subs = [f'{node.module}.{n}' for n in names if f'{node.module}.{n}' in MODULES]
      for target in subs or [node.module]:
        yield target, node.lineno, in_function(node), names


def _graph() -> dict[str, set[str]]:
  graph = {name: set() for name in MODULES}
  for name, tree in MODULES.items():
    for target, _, _, _ in _imports(tree):
      if target in MODULES and target != name:
        graph[name].add(target)
  return graph


def test_the_layer_table_names_every_folder():
  for name in MODULES:
    if name != 'amber_jax':
      _layer(name)


def test_imports_run_one_way():
  upward = [f'{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})'
            for name, targets in _graph().items() if name != 'amber_jax'
            for target in targets if target != 'amber_jax' and _layer(target) > _layer(name)]
  assert not upward, '\n'.join(upward)


def test_no_import_cycles():
  graph = _graph()
  cycles, state = [], {}

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  assert not cycles, '\n'.join(cycles)


def test_the_library_never_imports_configs_or_the_cli():
  bad = [f'{name}:{line} imports {target}' for name, tree in MODULES.items()
         if not name.startswith('amber_jax.cli')
         for target, line, _, _ in _imports(tree)
         if target.split('.')[0] == 'configs' or target.startswith('amber_jax.cli')]
  assert not bad, '\n'.join(bad)


def test_no_use_of_another_modules_private_names():
  bad = []
  for name, tree in MODULES.items():
    aliases = {}
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('amber_jax'):
        for alias in node.names:
          if alias.name.startswith('_') and not alias.name.startswith('__'):
            bad.append(f'{name}:{node.lineno} imports {node.module}.{alias.name}')
          if f'{node.module}.{alias.name}' in MODULES:
            aliases[alias.asname or alias.name] = f'{node.module}.{alias.name}'
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith('_')
          and not node.attr.startswith('__')):
        bad.append(f'{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}')
  assert not bad, '\n'.join(bad)


def test_in_function_imports_only_keep_heavy_dependencies_off():
  bad = [f'{name}:{line} imports {target} inside a function (import it at the top; only '
         f'{", ".join(HEAVY)} may wait)'
         for name, tree in MODULES.items()
         for target, line, inside, _ in _imports(tree)
         if inside and not any(target == h or target.startswith(h + '.') for h in HEAVY)]
  assert not bad, '\n'.join(bad)


def test_no_module_over_450_lines():
  long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob('*.py')
          if (n := len(p.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
  assert not long, f'split these modules (each should hold one job): {long}'


def test_the_training_core_imports_without_tensorflow():
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  # As on the GPU machines: jax, flax, optax, orbax; no TensorFlow, Grain, ArrayRecord or Beam.
  code = ('import sys\n'
          'for m in ("grain", "array_record", "apache_beam"): sys.modules[m] = None\n'
          'import amber_jax.training.loop, amber_jax.training.aot, amber_jax.data.inputs\n'
          'import amber_jax.parallel.mesh, amber_jax.export.runs\n'
          'heavy = sorted(m for m in ("tensorflow", "seqio", "torch", "transformers") '
          'if m in sys.modules)\n'
          'assert not heavy, heavy\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-2000:]
