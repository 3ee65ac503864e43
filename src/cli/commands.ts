// Client commands of the `eggsfs` CLI, with the original's names and arguments. Each module
// exports `run(argv, name)`; one module may serve several commands.
import type { Command } from './main.js';

const CLIENT = './client-commands.js';

export const CLIENT_COMMANDS: Record<string, Command> = {
  ls: { summary: 'list a directory: ls PATH', module: CLIENT },
  stat: { summary: 'show a file or directory: stat PATH', module: CLIENT },
  lookup: { summary: 'show the inode of a path: lookup PATH', module: CLIENT },
  cat: { summary: 'print a file: cat PATH', module: CLIENT },
  mkdir: { summary: 'make a directory: mkdir PATH', module: CLIENT },
  echo_into: { summary: 'write a string into a new file: echo_into PATH STRING', module: CLIENT },
  copy_into: { summary: 'copy a local file into EggsFS: copy_into DEST SRC', module: CLIENT },
  copy_out: { summary: 'copy an EggsFS file to a local file: copy_out SRC DEST', module: CLIENT },
  mv: { summary: 'rename or move: mv FROM TO', module: CLIENT },
  rm: { summary: 'remove a file: rm PATH', module: CLIENT },
  rmdir: { summary: 'remove an empty directory: rmdir PATH', module: CLIENT },
  rm_file: { summary: 'remove a file (the original name of rm): rm_file PATH', module: CLIENT },
  rm_dir: { summary: 'remove an empty directory (the original name of rmdir): rm_dir PATH', module: CLIENT },
  transient_files: { summary: 'list files being written on every shard', module: CLIENT },
  fsck: { summary: 'check the namespace invariants of every shard', module: './fsck.js' },
};
