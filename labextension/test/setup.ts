// jsdom has no DragEvent; @lumino/dragdrop (pulled in by @lumino/widgets) subclasses it.
if (typeof (globalThis as any).DragEvent === 'undefined') {
  (globalThis as any).DragEvent = class DragEvent extends MouseEvent {};
}
