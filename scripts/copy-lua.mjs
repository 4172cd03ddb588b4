// Copies the Lua scripts next to the compiled JavaScript so dist/ runs on its own.
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// Start from an empty dist/lua: a renamed script must not survive under its old name.
rmSync(join(root, 'dist', 'lua'), { recursive: true, force: true });
mkdirSync(join(root, 'dist', 'lua'), { recursive: true });
cpSync(join(root, 'src', 'lua'), join(root, 'dist', 'lua'), { recursive: true });
