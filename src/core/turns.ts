/**
 * The event loop's turn, as a number that one shared setImmediate advances
 * while anything asks for it: transports count the work one connection does
 * per turn with it, and leave the rest for the next turn, so every other
 * connection is served in between.
 */
let turn = 0;
let scheduled = false;

function advance(): void {
  turn++;
  scheduled = false;
}

export function currentTurn(): number {
  if (!scheduled) {
    scheduled = true;
    setImmediate(advance);
  }
  return turn;
}
