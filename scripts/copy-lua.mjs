// Copies the Lua scripts next to the compiled JavaScript so dist/ runs on its own.
import { cpSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(join(root, 'dist', 'lua'), { recursive: true });
cpSync(join(root, 'src', 'lua'), join(root, 'dist', 'lua'), { recursive: true });
