// Writes pipelines/data/stories/instructions.jsonl: short instruction -> story
// records in the TinyStories style the stories260K model knows, so a few
// minutes of LoRA on two CPU cores teach it to follow the instruction format
// and use the named character. Deterministic (seeded); a few exact and near
// duplicates are left in on purpose for the dedupe step to find.
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
let seed = 20261128
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)]

const names = [
  "Tom",
  "Sue",
  "Max",
  "Mia",
  "Ben",
  "Lucy",
  "Sam",
  "Anna",
  "Tim",
  "Lily",
  "Jack",
  "Zoe",
  "Bob",
  "Kim",
  "Dan",
  "Emma",
]
const animals = ["cat", "dog", "bird", "fish", "bunny", "bear", "frog", "duck"]
const things = ["ball", "kite", "box", "hat", "cake", "tree", "boat", "car"]
const colors = ["red", "blue", "green", "big", "small", "yellow"]
const places = ["park", "garden", "house", "pond", "school", "forest"]
const feelings = ["happy", "sad", "scared", "proud", "tired"]

const records = []
for (let i = 0; i < 420; i++) {
  const name = pick(names)
  const animal = pick(animals)
  const thing = pick(things)
  const color = pick(colors)
  const place = pick(places)
  const feeling = pick(feelings)
  const kind = Math.floor(rand() * 3)
  if (kind === 0)
    records.push({
      instruction: `Write a story about a ${animal} named ${name}.`,
      output: `Once upon a time, there was a ${animal} named ${name}. ${name} liked to play in the ${place}. One day, ${name} found a ${color} ${thing}. ${name} was very ${feeling}.`,
    })
  else if (kind === 1)
    records.push({
      instruction: `Tell me about ${name} and the ${color} ${thing}.`,
      output: `${name} had a ${color} ${thing}. ${name} took the ${thing} to the ${place}. The ${thing} was fun, and ${name} felt ${feeling}.`,
    })
  else
    records.push({
      instruction: `What did ${name} see in the ${place}?`,
      output: `${name} saw a ${animal} in the ${place}. The ${animal} had a ${color} ${thing}. ${name} said, "Hello, ${animal}!"`,
    })
}
// Duplicates for dedupe: exact copies, and copies differing only in spacing and case.
for (let i = 0; i < 12; i++) records.push({ ...records[i * 7] })
for (let i = 0; i < 6; i++) {
  const r = records[i * 11 + 3]
  records.push({ instruction: r.instruction.toUpperCase(), output: r.output.replace(/ /g, "  ") })
}
const out = path.join(root, "pipelines/data/stories/instructions.jsonl")
fs.mkdirSync(path.dirname(out), { recursive: true })
fs.writeFileSync(out, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
console.log(`wrote ${records.length} records to ${path.relative(root, out)}`)
