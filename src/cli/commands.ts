// Client commands of the `eggsfs` CLI (ls, cat, mkdir, copy_into, …), each in its own module.
import type { Command } from './main.js';

export const CLIENT_COMMANDS: Record<string, Command> = {};
